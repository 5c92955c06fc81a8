"""The dataset card and the Hub folder: front matter, offline loading, statistics, plots (builders.corpus.card)."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import yaml
from corpus_rows import schema_row, write_build

from builders.corpus.assembler import assemble
from builders.corpus.card import read_card
from builders.corpus.recipe import parse_recipe
from builders.corpus.settings import Settings
from builders.schema import FEATURES, validate

REFCOCO_IMAGE = "images/mscoco/images/train2014/COCO_train2014_{:012d}.jpg"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    """Two configs (one with two tasks and a repeat), an evaluation split sharing an image."""
    tmp = tmp_path_factory.mktemp("card")
    refcoco = write_build(tmp / "refcoco", [
        schema_row("refcoco", "train", str(k), image=REFCOCO_IMAGE.format(k), image_id=str(k),
                   boxes=[[0, 0, 64, 48]], answer="the small red ball on the left")
        for k in range(1, 4)
    ] + [schema_row("refcoco", "testA", "9", image=REFCOCO_IMAGE.format(9), image_id="9", boxes=[[0, 0, 10, 10]])])
    vg = write_build(tmp / "vg", [
        # 3 regions: areas 64x48 = 1% of 640x480, 320x240 = 25%, full image = 100%
        schema_row("vg", "train", "1", image="VG_100K/1.jpg", image_id="1",
                   boxes=[[0, 0, 64, 48], [0, 0, 320, 240], [0, 0, 640, 480]], meta={"coco_id": 9}),
        schema_row("vg", "train", "2", image="VG_100K/2.jpg", image_id="2", boxes=[[0, 0, 20, 80]],
                   task="region_caption_short", answer="two words"),
    ])
    recipe = parse_recipe({"name": "cardtest", "description": "A corpus for the card tests.",
                           "sources": {"refcoco": {"builder": "refcoco", "build": str(refcoco)},
                                       "vg": {"builder": "vg", "build": str(vg), "repeat": 2}},
                           "eval": {"refcoco": {"splits": ["testA"]}}})
    out = tmp / "corpus"
    report = assemble(recipe, Settings(raw_root=None, out=out, progress=False))
    return out, report


def test_front_matter_parses_and_declares_configs_and_licences(corpus):
    out, _ = corpus
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    metadata, body = read_card(out)
    assert metadata == yaml.safe_load(text.split("---\n")[1])
    configs = {config["config_name"]: config for config in metadata["configs"]}
    assert set(configs) == {"default", "refcoco", "vg"}
    assert configs["default"]["default"] is True
    assert configs["default"]["data_files"] == [{"split": "train",
                                                 "path": ["refcoco/train-*.parquet", "vg/train-*.parquet"]}]
    assert metadata["source_licenses"]["vg"].startswith("Visual Genome CC BY 4.0")
    assert "COCO" in metadata["source_licenses"]["refcoco"]
    assert metadata["license"] == ["cc-by-4.0"]
    assert metadata["size_categories"] == ["n<1K"]
    assert "image-text-to-text" in metadata["task_categories"]
    infos = {info["config_name"]: info for info in metadata["dataset_info"]}
    assert infos["vg"]["splits"][0]["num_examples"] == 4 and infos["default"]["splits"][0]["num_examples"] == 7
    features = datasets.Features._from_yaml_list(infos["default"]["features"])
    assert features == FEATURES
    assert "## Contamination" in body and "## Recipe" in body and "A corpus for the card tests." in body


def test_every_config_loads_offline_and_rows_validate(corpus):
    out, _ = corpus
    mix = datasets.load_dataset(str(out))
    assert list(mix) == ["train"] and mix["train"].num_rows == 7
    assert mix["train"].features == FEATURES
    for row in mix["train"]:
        validate(row)
    vg = datasets.load_dataset(str(out), "vg", split="train")
    assert sorted(vg["id"]) == ["vg:train:1", "vg:train:1:r2", "vg:train:2", "vg:train:2:r2"]
    stream = datasets.load_dataset(str(out), "refcoco", split="train", streaming=True)
    streamed = list(stream)
    assert [row["id"] for row in streamed] == ["refcoco:train:1", "refcoco:train:2", "refcoco:train:3"]
    for row in streamed:
        validate(row)
    assert streamed[0]["image"] == {"bytes": None, "path": REFCOCO_IMAGE.format(1)}


def test_statistics_per_config_and_task(corpus):
    _, report = corpus
    stats = report["statistics"]
    assert set(stats) == {"refcoco/region_caption", "vg/region_caption", "vg/region_caption_short"}
    vg = stats["vg/region_caption"]
    assert (vg["rows"], vg["regions"], vg["regions_per_row"], vg["max_regions_per_row"]) == (2, 6, 3.0, 3)
    assert vg["box_area_share"] == {"<1%": 0.0, "1-10%": 33.3, "10-50%": 33.3, ">=50%": 33.3}
    assert vg["coco_size_share"] == {"small": 0.0, "medium": 33.3, "large": 66.7}
    refcoco = stats["refcoco/region_caption"]
    # "<image>\nDescribe <region1>." (3 words) + "the small red ball on the left" (7 words)
    assert (refcoco["turns_per_row"], refcoco["words_per_row"], refcoco["words"]) == (2.0, 10.0, 30)


def test_card_body_shows_statistics_contamination_and_plots(corpus):
    out, _ = corpus
    _, body = read_card(out)
    assert "| vg | region_caption | 2 | 6 | 3.0 | 3 |" in body
    assert "| vg | (all) | 4 | 8 | 2.0 | 3 |" in body
    # VG image 1 is COCO image 9, an image of the RefCOCO testA split
    assert "| vg | refcoco:testA | 1 | 2 | 0 | 1 | 100.0 | 0 |" in body  # 1 row, repeated twice
    for name in ("regions_per_row", "box_size_aspect", "task_mix"):
        path = out / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name}.png)" in body
    assert "Images are **not** embedded" in body


def test_a_config_without_rows_is_not_declared(tmp_path):
    build = write_build(tmp_path / "b", [schema_row("vg", "train", "1", image="VG_100K/1.jpg", image_id="1",
                                                    boxes=[[0, 0, 9, 9]])])
    recipe = parse_recipe({"name": "r", "sources": {"vg": {"builder": "vg", "build": str(build)},
                                                    "none": {"builder": "vg", "build": str(build), "sample": 0}}})
    assemble(recipe, Settings(raw_root=None, out=tmp_path / "out", progress=False, plots=False))
    metadata, body = read_card(tmp_path / "out")
    assert [config["config_name"] for config in metadata["configs"]] == ["default", "vg"]
    assert "contributed no row (not declared as configs): none" in body
    assert datasets.load_dataset(str(tmp_path / "out"), split="train").num_rows == 1
