"""Both GPT4RoI recipes on the synthetic world, through the command line.

The world hard-links one picture into every release that shows it (COCO, RefCOCO, LLaVA, Visual Genome) and
records those files per scene in ``world.json``. That is ground truth independent of ids: the contamination
table must count exactly the scenes shared by a training config and an evaluation split.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from builders.corpus.card import read_card
from builders.schema import validate
from builders.storage.datafolder import list_splits
from builders.synthetic import synthesize
from gpt4roi.cli import main as cli


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    synthesize(out, "tiny", 0)
    return out


def _corpus(world: Path, recipe: str) -> tuple[Path, dict]:
    out = world.parent / recipe
    assert cli(["corpus", f"recipe={recipe}", f"raw_root={world}", f"out={out}", "progress=false"]) == 0
    return out, json.loads((out / "corpus_report.json").read_text())


@pytest.fixture(scope="module")
def stage1(world):
    return _corpus(world, "stage1")


def _scene_of(world: Path) -> dict[str, str]:
    """``<release folder>/<image path>`` -> scene key, for every picture the world wrote."""
    manifest = json.loads((world / "world.json").read_text())
    return {path: scene["key"] for scene in manifest["scenes"] for path in scene["files"]}


def _scenes(paths: list[str], raw: str, scene_of: dict[str, str]) -> set[str]:
    return {scene_of[f"{raw}/{path}"] for path in paths}


def _image_paths(files: list[Path]) -> list[str]:
    return [image["path"] for path in files for image in pq.read_table(path, columns=["image"]).column("image").to_pylist()]


def _expected_overlaps(world: Path, out: Path, report: dict) -> dict[tuple[str, str], int]:
    """Shared scenes per (training config, evaluation split), from the world's manifest."""
    scene_of = _scene_of(world)
    recipe = report["recipe"]
    train = {name: _scenes(_image_paths(sorted((out / name).glob("*.parquet"))), entry["raw"], scene_of)
             for name, entry in recipe["sources"].items() if (out / name).is_dir()}
    folders = {entry: out.parent / f"{out.name}.builds" / build["folder"]
               for build in report["builds"] for entry in build["entries"]}
    expected = {}
    for name, entry in recipe["eval"].items():
        raw = (entry or {}).get("raw") or recipe["sources"][name]["raw"]
        splits = {s.split: s for s in list_splits(folders[name])}
        for split in entry["splits"]:
            shown = _scenes(_image_paths(list(splits[split].paths)), raw, scene_of)
            for config, scenes in train.items():
                if scenes & shown:
                    expected[(config, f"{name}:{split}")] = len(scenes & shown)
    return expected


def _table(report: dict) -> dict[tuple[str, str], int]:
    return {(row["train"], row["eval"]): row["overlapping_images"] for row in report["contamination"]["overlaps"]}


def test_stage1_contamination_matches_the_planted_overlaps(world, stage1):
    out, report = stage1
    expected = _expected_overlaps(world, out, report)
    # COCO train pictures are the RefCOCO evaluation pictures, as in the real releases
    assert {train for train, _ in expected} == {"coco"}
    assert {label for _, label in expected} == {f"{name}:{split}" for name in ("refcoco", "refcoco+")
                                                for split in ("validation", "testA", "testB")} | {
        "refcocog:validation", "refcocog:test"}
    assert _table(report) == expected


def test_stage1_loads_and_its_card_has_the_statistics(stage1):
    out, report = stage1
    metadata, body = read_card(out)
    assert [config["config_name"] for config in metadata["configs"]] == ["default", "coco", "refcoco", "refcoco+"]
    mix = datasets.load_dataset(str(out), split="train")
    assert mix.num_rows == sum(report["entries"][name]["train"]["written"] for name in ("coco", "refcoco", "refcoco+"))
    assert set(mix.unique("source")) == {"coco", "refcoco", "refcoco+"}
    for row in mix.select(range(0, mix.num_rows, 7)):
        validate(row)
    for config in ("coco", "refcoco", "refcoco+"):
        rows = datasets.load_dataset(str(out), config, split="train", streaming=True)
        assert {row["source"] for row in rows} == {config}
        assert f"| {config} | " in body
    assert (out / "plots" / "task_mix.png").is_file()


def test_stage2_contamination_matches_the_planted_overlaps(world):
    out, report = _corpus(world, "stage2")
    expected = _expected_overlaps(world, out, report)
    assert {train for train, _ in expected} >= {"llava", "vg"}  # COCO pictures in LLaVA and Visual Genome
    assert _table(report) == expected
    by_source = defaultdict(int)
    for row in datasets.load_dataset(str(out), split="train"):
        by_source[row["source"]] += 1
    assert set(by_source) == {"refcocog", "flickr30k", "vg", "llava", "vcr"}
    metadata, _ = read_card(out)
    assert {"vcr_all", "vcr_single"} <= set(metadata["source_licenses"])


def test_embedded_images_decode_to_the_rows_sizes(world):
    out = world.parent / "stage1_embedded"
    assert cli(["corpus", "recipe=stage1", f"raw_root={world}", f"out={out}", "embed_images=true", "plots=false",
                f"builds={world.parent / 'stage1.builds'}", "progress=false"]) == 0
    rows = datasets.load_dataset(str(out), "refcoco", split="train").cast_column("image", datasets.Image())
    for row in rows.select(range(0, rows.num_rows, 25)):
        assert row["image"].size == (row["width"], row["height"])
    _, body = read_card(out)
    assert "Images are embedded" in body
