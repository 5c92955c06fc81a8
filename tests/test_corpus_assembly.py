"""Corpus assembly: determinism, deduplication, weights, decontamination, recipes (builders.corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from corpus_rows import schema_row, write_build

from builders.corpus import assembler as corpus_module
from builders.corpus.assembler import assemble
from builders.corpus.recipe import RecipeError, parse_recipe
from builders.corpus.settings import Settings

REFCOCO_IMAGE = "images/mscoco/images/train2014/COCO_train2014_{:012d}.jpg"


def _ids(out: Path, config: str, split: str = "train") -> list[str]:
    return [row_id for path in sorted((out / config).glob(f"{split}-*.parquet"))
            for row_id in pq.read_table(path, columns=["id"]).column("id").to_pylist()]


def _run(tmp_path: Path, sources: dict, *, eval: dict | None = None, name: str = "out", **settings) -> dict:
    recipe = parse_recipe({"name": "t", "sources": sources, "eval": eval or {}})
    settings.setdefault("progress", False)
    settings.setdefault("plots", False)
    return assemble(recipe, Settings(raw_root=None, out=tmp_path / name, **settings))


def test_fingerprint_is_identical_across_two_runs(realdata, tmp_path):
    coco = str(realdata / "coco" / "coco_mini_2017")
    annotations_only = {"check_images": False}  # the real sample ships no pictures
    sources = {"coco": {"builder": "coco", "raw": coco, "options": annotations_only},
               "coco_sampled": {"builder": "coco", "raw": coco, "options": {"max_regions": 5, **annotations_only},
                                "sample": 20, "repeat": 2}}
    first = _run(tmp_path, sources, name="a", plots=True)
    second = _run(tmp_path, sources, name="b", plots=True, builds=tmp_path / "other_builds")
    assert first["fingerprint"] == second["fingerprint"]
    assert len(first["fingerprint"]) == 64
    for relative in ("coco/train-00000-of-00001.parquet", "README.md", "plots/task_mix.png"):
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    # a different seed builds and samples differently, so the corpus differs
    third = _run(tmp_path, sources, name="c", seed=1)
    assert third["fingerprint"] != first["fingerprint"]
    assert first["entries"]["coco"]["train"]["written"] == 80  # the sample's 80 images with annotations


def _dedup_builds(tmp_path: Path) -> tuple[Path, Path]:
    box = [[10, 10, 60, 60]]
    a = write_build(tmp_path / "a", [
        schema_row("refcoco", "train", "1", image=REFCOCO_IMAGE.format(5), image_id="5", boxes=box),
        schema_row("refcoco", "train", "2", image=REFCOCO_IMAGE.format(5), image_id="5", boxes=box),  # dup of 1
        schema_row("refcoco", "train", "3", image=REFCOCO_IMAGE.format(5), image_id="5", boxes=box,
                   answer="another answer"),                                      # same image, other text
        schema_row("refcoco", "train", "4", image=REFCOCO_IMAGE.format(6), image_id="6", boxes=box),
    ])
    b = write_build(tmp_path / "b", [
        # the 2017 name of COCO image 5 with the same regions and conversation: a duplicate across sources
        schema_row("coco", "train", "5", image="train2017/000000000005.jpg", image_id="5", boxes=box),
        schema_row("coco", "train", "6", image="train2017/000000000006.jpg", image_id="6", boxes=[[0, 0, 5, 5]]),
    ])
    return a, b


def test_dedup_counts_within_and_across_sources(tmp_path):
    a, b = _dedup_builds(tmp_path)
    report = _run(tmp_path, {"first": {"builder": "refcoco", "build": str(a)},
                             "second": {"builder": "coco", "build": str(b)}})
    first, second = report["entries"]["first"]["train"], report["entries"]["second"]["train"]
    assert (first["read"], first["duplicates_within"], first["duplicates_across"], first["written"]) == (4, 1, 0, 3)
    assert (second["read"], second["duplicates_within"], second["duplicates_across"], second["written"]) == (2, 0, 1, 1)
    assert _ids(tmp_path / "out", "first") == ["refcoco:train:1", "refcoco:train:3", "refcoco:train:4"]
    assert _ids(tmp_path / "out", "second") == ["coco:train:6"]
    report = _run(tmp_path, {"first": {"builder": "refcoco", "build": str(a)},
                             "second": {"builder": "coco", "build": str(b)}}, name="nodedup", dedup=False)
    assert report["entries"]["first"]["train"]["written"] == 4
    assert report["entries"]["second"]["train"]["written"] == 2


def _numbered_build(folder: Path, count: int, *, reverse: bool = False) -> Path:
    rows = [schema_row("vg", "train", str(k), image=f"VG_100K/{k}.jpg", image_id=str(k), boxes=[[0, 0, 5 + k % 600, 5]])
            for k in range(count)]
    return write_build(folder, rows[::-1] if reverse else rows, source="vg")


def test_sample_n_is_seeded_and_independent_of_input_order(tmp_path):
    forward = _numbered_build(tmp_path / "fwd", 50)
    backward = _numbered_build(tmp_path / "bwd", 50, reverse=True)
    one = _run(tmp_path, {"vg": {"builder": "vg", "build": str(forward), "sample": 10}}, name="one")
    two = _run(tmp_path, {"vg": {"builder": "vg", "build": str(backward), "sample": 10}}, name="two")
    other = _run(tmp_path, {"vg": {"builder": "vg", "build": str(forward), "sample": 10}}, name="other", seed=3)
    chosen = _ids(tmp_path / "one", "vg")
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert set(_ids(tmp_path / "two", "vg")) == set(chosen)
    assert set(_ids(tmp_path / "other", "vg")) != set(chosen)
    assert one["entries"]["vg"]["train"] == {**one["entries"]["vg"]["train"], "candidates": 50, "sampled": 10,
                                             "written": 10}
    assert two["entries"]["vg"]["train"]["written"] == other["entries"]["vg"]["train"]["written"] == 10
    big = _run(tmp_path, {"vg": {"builder": "vg", "build": str(forward), "sample": 500}}, name="big")
    assert big["entries"]["vg"]["train"]["written"] == 50  # asking for more keeps everything


def test_repeat_k_writes_every_row_k_times_with_distinct_ids(tmp_path):
    build = _numbered_build(tmp_path / "b", 4)
    report = _run(tmp_path, {"vg": {"builder": "vg", "build": str(build), "repeat": 3}})
    ids = _ids(tmp_path / "out", "vg")
    assert report["entries"]["vg"]["train"]["written"] == 12
    assert len(ids) == len(set(ids)) == 12
    assert {row_id for row_id in ids if row_id.endswith(":r3")} == {f"vg:train:{k}:r3" for k in range(4)}
    assert report["statistics"]["vg/region_caption"]["rows"] == 12


def _contaminated(tmp_path: Path) -> tuple[Path, Path]:
    evals = write_build(tmp_path / "refcoco", [
        schema_row("refcoco", "testA", "1", image=REFCOCO_IMAGE.format(1), image_id="1", boxes=[[100, 100, 200, 200]]),
    ], source="refcoco")
    train = write_build(tmp_path / "coco", [
        schema_row("coco", "train", "1", image="train2017/000000000001.jpg", image_id="1",
                   boxes=[[100, 100, 200, 200]]),                          # same box: region overlap
        schema_row("coco", "train", "1b", image="train2017/000000000001.jpg", image_id="1",
                   boxes=[[300, 300, 400, 400]]),                          # same image, other box
        schema_row("coco", "train", "2", image="train2017/000000000002.jpg", image_id="2",
                   boxes=[[100, 100, 200, 200]]),                          # clean
    ], source="coco")
    return train, evals


@pytest.mark.parametrize(("level", "dropped", "kept"), [("image", 2, ["coco:train:2"]),
                                                        ("region", 1, ["coco:train:1b", "coco:train:2"])])
def test_decontaminate_drops_and_counts(tmp_path, level, dropped, kept):
    train, evals = _contaminated(tmp_path)
    sources = {"coco": {"builder": "coco", "build": str(train)}}
    eval_entries = {"refcoco": {"builder": "refcoco", "build": str(evals), "splits": ["testA"]}}
    report = _run(tmp_path, sources, eval=eval_entries, decontaminate=True, decontaminate_level=level)
    assert report["entries"]["coco"]["train"]["decontaminated"] == dropped
    assert _ids(tmp_path / "out", "coco") == kept
    cells = report["contamination"]["overlaps"]
    assert [(c["train"], c["eval"], c["dropped_rows"]) for c in cells] == [("coco", "refcoco:testA", dropped)]
    # what is left: at image level nothing overlaps; at region level row 1b still shows the image
    assert cells[0]["train_rows"] == (0 if level == "image" else 1)
    kept_report = _run(tmp_path, sources, eval=eval_entries, name="kept")
    assert kept_report["entries"]["coco"]["train"]["written"] == 3
    assert kept_report["contamination"]["overlaps"][0]["train_rows"] == 2


def test_variants_split_one_build_into_configs(tmp_path):
    rows = [schema_row("vcr", "train", f"{k}:{variant}", image=f"vcr1images/m/{k}.jpg", image_id=f"m/{k}",
                       boxes=[[0, 0, 9, 9]], variant=variant, task="region_reasoning", answer=variant)
            for k in range(3) for variant in ("all", "single")]
    build = write_build(tmp_path / "vcr", rows, source="vcr")
    report = _run(tmp_path, {"vcr_all": {"builder": "vcr", "build": str(build), "variants": ["all"]},
                             "vcr_single": {"builder": "vcr", "build": str(build), "variants": "single"}})
    assert report["entries"]["vcr_all"]["train"]["other_variants"] == 3
    assert _ids(tmp_path / "out", "vcr_single") == [f"vcr:train:{k}:single" for k in range(3)]
    assert len(report["builds"]) == 1  # both entries read one build


def test_builds_are_reused_when_up_to_date(realdata, tmp_path):
    sources = {"coco": {"builder": "coco", "raw": str(realdata / "coco" / "coco_mini_2017"),
                        "options": {"check_images": False}}}  # the real sample ships no pictures
    first = _run(tmp_path, sources, name="one", builds=tmp_path / "builds")
    second = _run(tmp_path, sources, name="two", builds=tmp_path / "builds")
    changed = _run(tmp_path, {"coco": {**sources["coco"], "options": {"max_regions": 3, "check_images": False}}},
                   name="three",
                   builds=tmp_path / "builds")
    assert [b["reused"] for b in (first["builds"][0], second["builds"][0], changed["builds"][0])] == [False, True, False]
    assert first["fingerprint"] == second["fingerprint"] != changed["fingerprint"]
    assert len(list((tmp_path / "builds").iterdir())) == 2


def test_embed_images_puts_the_bytes_in_the_parquet(tmp_path):
    raw = tmp_path / "raw"
    (raw / "imgs").mkdir(parents=True)
    (raw / "imgs" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    build = write_build(tmp_path / "build", [schema_row("x", "train", "1", image="imgs/a.jpg", image_id="a",
                                                        boxes=[[0, 0, 5, 5]])])
    _run(tmp_path, {"x": {"builder": "coco", "build": str(build), "raw": str(raw)}}, embed_images=True)
    (image,) = pq.read_table(tmp_path / "out" / "x" / "train-00000-of-00001.parquet").column("image").to_pylist()
    assert image == {"bytes": b"\xff\xd8 not really a jpeg", "path": "imgs/a.jpg"}
    (raw / "imgs" / "a.jpg").unlink()
    with pytest.raises(Exception, match="a.jpg"):
        _run(tmp_path, {"x": {"builder": "coco", "build": str(build), "raw": str(raw)}}, embed_images=True,
             name="missing")
    assert not (tmp_path / "missing").exists()  # nothing half-written


def test_shards_are_bounded(tmp_path):
    build = _numbered_build(tmp_path / "b", 3000)
    report = _run(tmp_path, {"vg": {"builder": "vg", "build": str(build)}}, max_shard_bytes=100_000,
                  validate=False)
    shards = report["files"]["vg"]["train"]
    assert len(shards) > 1 and shards[-1] == f"vg/train-{len(shards) - 1:05d}-of-{len(shards):05d}.parquet"
    assert len(_ids(tmp_path / "out", "vg")) == 3000


@pytest.mark.parametrize(("recipe", "message"), [
    ({"name": "r", "sources": {"a": {"builder": "coco", "raw": "c", "weight": 2}}}, "unknown setting"),
    ({"name": "r", "sources": {"a": {"builder": "coco", "raw": "c", "sample": -1}}}, "sample"),
    ({"name": "r", "sources": {"a": {"builder": "coco", "raw": "c", "repeat": 0}}}, "repeat"),
    ({"name": "r", "sources": {"a": {"builder": "coco", "raw": "c", "splits": ["dev"]}}}, "unknown split"),
    ({"name": "r", "sources": {"a": {"builder": "coco"}}}, "needs 'raw'"),
    ({"name": "r", "sources": {"default": {"builder": "coco", "raw": "c"}}}, "reserved"),
    ({"name": "r", "sources": {"a": {"builder": "coco", "raw": "c"}}, "eval": {"b": {"splits": ["test"]}}},
     "needs 'builder'"),
    ({"name": "r", "sources": {"a": {"builder": "coco", "raw": "c"}}, "eval": {"a": {}}}, "needs 'splits'"),
    ({"sources": {}}, "needs a 'name'"),
])
def test_bad_recipes_are_refused_with_the_entry_named(recipe, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe)


def test_report_is_written_beside_the_card(tmp_path):
    build = _numbered_build(tmp_path / "b", 3)
    _run(tmp_path, {"vg": {"builder": "vg", "build": str(build)}})
    report = json.loads((tmp_path / "out" / "corpus_report.json").read_text())
    assert report["entries"]["vg"]["train"]["written"] == 3
    assert (tmp_path / "out" / "README.md").is_file()


def test_an_entry_keeping_every_row_copies_the_build_shards_verbatim(tmp_path, monkeypatch):
    copies = []
    original = corpus_module.copy_shards
    monkeypatch.setattr(corpus_module, "copy_shards", lambda files, folder: copies.append(folder) or original(files, folder))
    build = _numbered_build(tmp_path / "b", 20)
    shard = build / "data" / "train-00000-of-00001.parquet"
    _run(tmp_path, {"vg": {"builder": "vg", "build": str(build)}}, name="copied")
    assert len(copies) == 1 and copies[0].name == "vg" and copies[0].parent.name.startswith(".copied.tmp-")
    assert (tmp_path / "copied" / "vg" / "train-00000-of-00001.parquet").read_bytes() == shard.read_bytes()
    # validating (like sampling, repeating, dropping a row) writes the rows anew: same rows, same statistics
    report = _run(tmp_path, {"vg": {"builder": "vg", "build": str(build)}}, name="validated", validate=True)
    assert len(copies) == 1
    assert _ids(tmp_path / "validated", "vg") == _ids(tmp_path / "copied", "vg") == [f"vg:train:{k}" for k in range(20)]
    assert report["statistics"]["vg/region_caption"]["rows"] == 20
    # a build whose shards exceed the corpus shard bound is re-cut, not copied
    _run(tmp_path, {"vg": {"builder": "vg", "build": str(build)}}, name="recut", max_shard_bytes=1000, batch_rows=5)
    assert len(copies) == 1 and len(list((tmp_path / "recut" / "vg").glob("*.parquet"))) > 1


def test_a_build_with_foreign_columns_is_refused_naming_the_shard(tmp_path):
    import pyarrow as pa

    from builders.errors import SourceFileError

    build = _numbered_build(tmp_path / "b", 3)
    shard = build / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard).drop_columns(["meta"]).append_column("caption", pa.array(["x"] * 3))
    pq.write_table(table, shard)
    with pytest.raises(SourceFileError, match=r"train-00000-of-00001.parquet.*missing columns \['meta'\]; "
                                              r"unknown columns \['caption'\]"):
        _run(tmp_path, {"vg": {"builder": "vg", "build": str(build)}})
    assert not (tmp_path / "out").exists()
