"""Same seed -> byte-identical raw releases and identical built datasets; another seed -> different ones."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from corpus_rows import built_rows

from builders.build import build_source
from builders.sources import BUILDERS
from builders.synthetic import SOURCE_OPTIONS, SOURCE_RELEASE, synthesize


def file_digests(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def built(world: Path, out: Path, source: str) -> list[dict]:
    build_source(source, world / SOURCE_RELEASE[source], out, options=SOURCE_OPTIONS.get(source), progress=False)
    return built_rows(out)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("determinism")
    paths = {"a": base / "seed0_a", "b": base / "seed0_b", "other": base / "seed1"}
    synthesize(paths["a"], "tiny", seed=0)
    synthesize(paths["b"], "tiny", seed=0)
    synthesize(paths["other"], "tiny", seed=1)
    return paths


def test_same_seed_writes_byte_identical_files(worlds):
    first, second = file_digests(worlds["a"]), file_digests(worlds["b"])
    # the tiny world's 287 files: pictures, annotation files, Flickr30k's sentence and VOC box files, split lists
    assert Counter(Path(name).suffix for name in first) == {
        ".jpg": 174, ".json": 53, ".txt": 28, ".xml": 24, ".p": 5, ".jsonl": 2, ".pkl": 1}
    assert first == second


def test_another_seed_writes_different_files(worlds):
    first, other = file_digests(worlds["a"]), file_digests(worlds["other"])
    annotation_files = [name for name in first if name.endswith((".json", ".p", ".jsonl", ".pkl"))]
    assert len(annotation_files) == 61
    differing = [name for name in annotation_files if first[name] != other.get(name)]
    assert differing == annotation_files, sorted(set(annotation_files) - set(differing))  # every one of them


@pytest.mark.parametrize("source", list(BUILDERS))
def test_built_datasets_are_identical_for_a_seed_and_differ_across_seeds(worlds, tmp_path, source):
    first = built(worlds["a"], tmp_path / "a", source)
    assert first == built(worlds["b"], tmp_path / "b", source)
    assert first != built(worlds["other"], tmp_path / "other", source)


def test_vg_full_is_deterministic(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        synthesize(tmp_path / name, "vg_full", seed=seed, vg_images=50)
    a, b, c = (file_digests(tmp_path / name) for name in "abc")
    assert a == b and len(a) == 7  # six VG files + world.json
    assert all(a[name] != c[name] for name in a if name != "vg/image_data.json")
