"""``gpt4roi demo preset=quick``: the comparison end to end (slow, several minutes on 2 cores).

Every model of the demo is trained (stage 1 then 2) and evaluated with the floors; the leaderboard has a
measured value for every model on every task, the paired tests compare models on the same items, and the
HTML report is written.
"""

from __future__ import annotations

import csv
import json

import pytest

from gpt4roi.cli import main
from gpt4roi.configs import compose

TASKS = ("refcocog_reg", "roc_semantic", "vcr_qa", "vcr_qar", "vcr_q_ar")
MODELS = ("gpt4roi_tiny", "tiny_image_words", "tiny_image_coords", "tiny_image_overlay", "tiny_image_crop",
          "tiny_blind", "chance", "prior", "text_similarity")


def test_the_presets_are_a_config_group_that_explicit_settings_override():
    cfg = compose("demo", ["preset=quick", "compare.limit=3"])
    assert (cfg.scale, cfg.compare.stage1_steps, cfg.compare.stage2_steps, cfg.compare.limit) == ("tiny", 10, 20, 3)
    full = compose("demo", [])
    assert full.scale == "small" and full.compare.stage2_steps == 2 * full.compare.stage1_steps
    assert list(full.compare.tasks) == list(TASKS)


@pytest.mark.slow
def test_quick_demo_trains_evaluates_and_ranks_every_model_on_every_task(tmp_path, capsys):
    work = tmp_path / "demo"
    status = main(["demo", f"work_dir={work}", "preset=quick"])
    output = capsys.readouterr().out
    assert status == 0, output[-5000:]
    assert "## Measured (95% bootstrap intervals)" in output and "## Paired bootstrap tests" in output
    for model in MODELS[:6]:
        summary = json.loads((work / "train" / f"{model.removeprefix('gpt4roi_')}_stage2" / "summary.json").read_text())
        assert summary["steps"] == 20
    with open(work / "leaderboard" / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    measured = {(row["model"], row["task"]) for row in rows if row["kind"] == "measured" and row["value"] not in ("", "nan")}
    missing = [(model, task) for model in MODELS for task in TASKS if (model, task) not in measured]
    assert not missing, f"no measured value for {missing}"
    # every task answered on the same items by every model: the first compare.limit=16 of each, or all there are
    expected_n = {"refcocog_reg": 14, "roc_semantic": 16, "vcr_qa": 12, "vcr_qar": 12}
    for task, n in expected_n.items():
        counts = {model: json.loads((work / "results" / model / f"{task}.json").read_text())["n"] for model in MODELS}
        assert set(counts.values()) == {n}, (task, counts)
    page = (work / "leaderboard" / "leaderboard.html").read_text()
    assert all(model in page for model in MODELS)
