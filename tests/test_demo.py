"""``gpt4roi demo`` end to end at scale=tiny: every source built and named, an example rendered."""

from __future__ import annotations

import json

from PIL import Image

from builders.sources import BUILDERS
from gpt4roi.cli import main


def test_demo_builds_every_source_and_renders_an_example(tmp_path, capsys):
    work = tmp_path / "demo"
    status = main(["demo", f"work_dir={work}", "scale=tiny", "seed=0", "compare.enabled=false"])  # comparison: test_baselines_demo.py
    output = capsys.readouterr().out
    assert status == 0, output
    assert "FAILED" not in output
    for source in BUILDERS:
        assert f"│ {source} " in output, f"{source} missing from the demo's table:\n{output}"
        reports = json.loads((work / "built" / source / "build_report.json").read_text())
        assert reports["source"] == source
    (png,) = work.glob("example_*.png")
    assert png.name == "example_vcr_train.png"
    with Image.open(png) as image:  # the first VCR training row's picture (seed 0), its boxes drawn on it
        assert (image.format, image.size) == ("PNG", (224, 288))
    assert "example row vcr:train:train-0:all (region_reasoning)" in output
    assert "<region1> = box [78, 97, 105, 124] triangle" in output


def test_synth_command_writes_a_world_and_rejects_an_unknown_scale(tmp_path, capsys):
    assert main(["synth", f"out={tmp_path / 'w'}", "scale=tiny", "seed=2"]) == 0
    manifest = json.loads((tmp_path / "w" / "world.json").read_text())
    assert manifest["seed"] == 2 and manifest["scale"] == "tiny"
    assert main(["synth", f"out={tmp_path / 'x'}", "scale=huge"]) == 1
    assert "unknown scale 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_synth_refuses_to_replace_a_folder_that_is_not_a_world(tmp_path, capsys):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["synth", f"out={precious}", "scale=tiny"]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
