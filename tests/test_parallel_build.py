"""Parallel builds (builders/workers.py): the same bytes and counts whatever ``num_proc``, worker errors
that name the file and record, and a killed parallel build that leaves neither output nor processes behind.

Chunks are shrunk (``CHUNK_UNITS``) so that these small releases really go through the worker processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builders import workers
from builders.build import build_source
from builders.corpus.assembler import assemble
from builders.corpus.recipe import parse_recipe
from builders.corpus.settings import Settings
from builders.errors import StrictModeError
from builders.synthetic import synthesize

REPO = Path(__file__).resolve().parent.parent
NO_IMAGES = {"check_images": False}  # the vg_full release has annotations only


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(workers, "CHUNK_UNITS", 8)
    monkeypatch.setattr(workers, "MIN_CHUNKS_FOR_WORKERS", 2)


@pytest.fixture(scope="module")
def vg_release(tmp_path_factory) -> tuple[Path, dict]:
    """A 120-image vg_full release with bad records spread over several chunks, and 10 held-out images."""
    root = tmp_path_factory.mktemp("vg") / "world"
    summary = synthesize(root, "vg_full", 0, vg_images=120)["vg"]
    vg = root / "vg"
    images = json.loads((vg / "image_data.json").read_text())
    records = json.loads((vg / "region_descriptions.json").read_text())
    records[5]["regions"][0]["width"] = 0                                     # bad_box_degenerate
    records[50]["regions"][1]["phrase"] = "  "                                # empty_phrase
    records[90]["regions"][2]["region_id"] = records[90]["regions"][1]["region_id"]  # duplicate_id (region)
    duplicate = images[61]["image_id"]                                        # duplicate_id (image), main side
    images[62]["image_id"] = records[62]["id"] = duplicate
    lost = len(records[62]["regions"])
    (vg / "image_data.json").write_text(json.dumps(images))
    (vg / "region_descriptions.json").write_text(json.dumps(records))
    (vg / "held_out.txt").write_text("".join(f"{image['image_id']}\n" for image in images[100:110]))
    return vg, {"regions": summary["regions"], "lost": lost}


def parquet_bytes(out: Path) -> dict[str, bytes]:
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted((out / "data").glob("*.parquet"))}


def report_without_time(out: Path) -> dict:
    report = json.loads((out / "build_report.json").read_text())
    report.pop("seconds")
    return report


def test_vg_same_bytes_and_counts_with_one_and_two_processes(vg_release, small_chunks, tmp_path):
    vg, expected = vg_release
    options = {**NO_IMAGES, "test_image_ids": "held_out.txt"}
    for num_proc in (1, 2):
        build_source("vg", vg, tmp_path / f"p{num_proc}", options=options, progress=False, num_proc=num_proc)
    one, two = tmp_path / "p1", tmp_path / "p2"
    assert parquet_bytes(one) == parquet_bytes(two)
    assert sorted(parquet_bytes(one)) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert report_without_time(one) == report_without_time(two)
    report = report_without_time(two)
    assert report["rows_skipped"] == {"train": {"bad_box_degenerate": 1, "duplicate_id": 2, "empty_phrase": 1}}
    regions = report["regions_written"]
    assert regions["train"] + regions["test"] == expected["regions"] - expected["lost"] - 3
    assert report["rows_written"]["test"]["region_caption"] == regions["test"]  # one row per held-out region


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    world = tmp_path_factory.mktemp("tiny") / "world"
    synthesize(world, "tiny", 0, variants=False)
    return world


def test_coco_same_bytes_and_counts_with_one_and_two_processes(tiny_world, small_chunks, tmp_path):
    """A source without its own work units: rows are made here, checked and encoded by the workers."""
    for num_proc in (1, 2):
        build_source("coco", tiny_world / "coco", tmp_path / f"p{num_proc}", progress=False, num_proc=num_proc)
    assert parquet_bytes(tmp_path / "p1") == parquet_bytes(tmp_path / "p2")
    report = report_without_time(tmp_path / "p2")
    assert report == report_without_time(tmp_path / "p1")
    assert report["rows_written"] == {"train": {"region_category": 24}, "validation": {"region_category": 8}}


def test_corpus_with_embedded_images_is_the_same_whatever_num_proc(tiny_world, small_chunks, tmp_path):
    recipe = parse_recipe({"name": "t", "sources": {"vg": {"builder": "vg", "raw": "vg", "splits": ["train"]}}})
    reports = [assemble(recipe, Settings(raw_root=tiny_world, out=tmp_path / f"p{n}", embed_images=True,
                                         plots=False, progress=False, num_proc=n)) for n in (1, 2)]
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"]
    (shard,) = sorted((tmp_path / "p2" / "vg").glob("*.parquet"))
    assert shard.read_bytes() == (tmp_path / "p1" / "vg" / shard.name).read_bytes()
    images = pq.read_table(shard, columns=["image"]).column("image").to_pylist()
    assert len(images) == reports[1]["entries"]["vg"]["train"]["written"] > 8
    assert all(image["bytes"] == (tiny_world / "vg" / image["path"]).read_bytes() for image in images)


def test_worker_error_names_the_file_and_record(vg_release, small_chunks, tmp_path):
    vg, _ = vg_release
    records = json.loads((vg / "region_descriptions.json").read_text())
    image_id, region_id = records[5]["id"], records[5]["regions"][0]["region_id"]
    with pytest.raises(StrictModeError, match=rf"region_descriptions\.json image id={image_id} "
                                              rf"region id={region_id}: .*strict=true") as caught:
        build_source("vg", vg, tmp_path / "out", options=NO_IMAGES, strict=True, progress=False, num_proc=2)
    assert "raised in a build worker process" in "".join(caught.value.__notes__)
    assert not (tmp_path / "out").exists()
    assert [path.name for path in tmp_path.iterdir()] == []  # the temporary folder is gone too


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc (Linux)")
def test_killed_parallel_build_leaves_no_output_and_no_workers(vg_release, tmp_path):
    vg, _ = vg_release
    out = tmp_path / "out"
    # one unit a chunk, and the main process reads 20 units a second: the build is killed midway
    script = ("import time\n"
              "import builders.workers as w; w.CHUNK_UNITS = 1; w.MIN_CHUNKS_FOR_WORKERS = 2\n"
              "import builders.sources.vg as vg\n"
              "units = vg.VisualGenomeBuilder._release_units\n"
              "def slow(self, split):\n"
              "    for unit in units(self, split):\n"
              "        time.sleep(0.05)\n"
              "        yield unit\n"
              "vg.VisualGenomeBuilder._release_units = slow\n"
              "from builders.build import build_source\n"
              f"build_source('vg', {str(vg)!r}, {str(out)!r}, options={NO_IMAGES!r}, progress=False, num_proc=2)\n")
    main = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while len(_children(main.pid)) < 2:  # the workers (and spawn's resource tracker) have started
            assert main.poll() is None and time.monotonic() < deadline, "the build ended before it was killed"
            time.sleep(0.1)
        children = _children(main.pid)
        time.sleep(1.0)
    finally:
        main.send_signal(signal.SIGKILL)
        main.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{child}").exists() and _state(child) != "Z" for child in children):
        assert time.monotonic() < deadline, f"worker processes {children} outlived the killed build"
        time.sleep(0.2)
    assert not out.exists()
    build_source("vg", vg, out, options=NO_IMAGES, progress=False, num_proc=1)  # the next build cleans up
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_num_proc_must_be_positive(vg_release, tmp_path):
    with pytest.raises(ValueError, match="num_proc must be at least 1"):
        build_source("vg", vg_release[0], tmp_path / "out", options=NO_IMAGES, progress=False, num_proc=0)
    assert os.listdir(tmp_path) == []
