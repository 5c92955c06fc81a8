"""Assemble a corpus from a large Visual Genome build, next to the raw copy of the same bytes (the floor).

Input: the synthetic ``vg_full`` release made by ``benchmarks/build_vg.py`` (reused from ``benchmarks/scratch/``,
generated if missing), built once with ``builders.build.build_source("vg", ...)`` and then tiled ``--tile``
times with fresh image ids (so the copies are distinct images, not duplicates) to reach a size where
I/O dominates. Timed, in this process, after one warm-up read so that every contender reads from the page
cache:

* ``raw copy``      — ``shutil.copyfile`` of every parquet shard of the build: no assembly can be faster.
* ``assemble``      — ``builders.corpus.assembler.assemble`` with the defaults: dedup, contamination index, statistics,
  card and plots. Every row survives, so the build's shards are copied verbatim after one decoding read.
* ``sample (all)``  — ``sample: N`` with N above the row count: the two-read path of weighted entries,
  rows re-encoded into new shards.
* ``validate``      — the defaults plus per-row schema validation (``validate=true``), rows re-encoded.
* ``no dedup``      — the defaults without deduplication.

Usage: ``python -m benchmarks corpus_assembly [-- --images N --tile K --seed S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ._measure import WORK, machine, write_result

NAME = "corpus_assembly"


def vg_build(seed: int, images: int) -> Path:
    """The vg build of the vg_full release (built once, reused)."""
    from builders.build import build_source

    from .build_vg import ensure_release

    raw_root, _ = ensure_release(seed, images)
    folder = WORK / NAME / f"vg_build_seed{seed}_{images}"
    if not (folder / "build_report.json").is_file():
        print(f"building vg from {raw_root} ...", flush=True)
        build_source("vg", raw_root, folder, seed=seed, progress=False)
    return folder


def tiled_build(source: Path, tile: int) -> Path:
    """``source``'s rows ``tile`` times; copy k gets image ids shifted by k * 10^7 (distinct images)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from builders.storage.datafolder import list_splits
    from builders.storage.output import ShardedParquetWriter, atomic_directory

    folder = WORK / NAME / f"{source.name}_x{tile}"
    if (folder / "build_report.json").is_file():
        return folder
    print(f"tiling the build x{tile} ...", flush=True)
    with atomic_directory(folder) as tmp:
        for split in list_splits(source):
            writer = ShardedParquetWriter(tmp / "data", split.split)
            for copy in range(tile):
                for batch in split.batches():
                    table = pa.Table.from_batches([batch])
                    if copy:
                        ids = pc.cast(pc.add(pc.cast(table.column("image_id"), pa.int64()), copy * 10_000_000),
                                      pa.string()).combine_chunks()
                        paths = pc.binary_join_element_wise("VG_100K/", ids, ".jpg", "")
                        image = pa.StructArray.from_arrays([pa.nulls(len(table), pa.binary()), paths],
                                                           names=["bytes", "path"])
                        row_ids = pc.binary_join_element_wise(table.column("id"), f":t{copy}", "")
                        for name, column in (("image_id", ids), ("image", image), ("id", row_ids),
                                             ("meta", pa.array(["{}"] * len(table)))):
                            table = table.set_column(table.schema.get_field_index(name), name, column)
                    writer.write_table(table)
            writer.close()
        shutil.copy(source / "build_report.json", tmp / "build_report.json")
    return folder


def parquet_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.parquet"))


def raw_copy(build: Path, target: Path) -> float:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    for path in sorted(build.rglob("*.parquet")):
        shutil.copyfile(path, target / path.name)
    return time.perf_counter() - started


def assemble_once(build: Path, out: Path, sample: int | None = None, **settings: Any) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from builders.corpus.assembler import assemble
    from builders.corpus.recipe import parse_recipe
    from builders.corpus.settings import Settings

    recipe = parse_recipe({"name": "bench", "sources": {"vg": {"builder": "vg", "build": str(build),
                                                               "sample": sample}}})
    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    report = assemble(recipe, Settings(raw_root=None, out=out, progress=False, **settings))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    ids = hashlib.sha256()
    for path in sorted(out.rglob("*.parquet")):
        ids.update("\n".join(pq.read_table(path, columns=["id"]).column("id").to_pylist()).encode())
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "rows": sum(c["written"] for c in report["entries"]["vg"].values()),
            "rows_digest": ids.hexdigest(), "bytes": parquet_bytes(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks corpus_assembly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=3000, help="images of the vg_full release (108077 = real)")
    parser.add_argument("--tile", type=int, default=10, help="copies of the build, with distinct image ids")
    args = parser.parse_args(argv or [])

    build = tiled_build(vg_build(args.seed, args.images), args.tile)
    report = json.loads((build / "build_report.json").read_text())
    size = parquet_bytes(build)
    scratch = WORK / NAME / "scratch"
    raw_copy(build, scratch / "warmup")  # page cache warm for everyone
    floor = min(raw_copy(build, scratch / "copy") for _ in range(3))
    results = {"raw copy": {"seconds": round(floor, 3), "bytes": size}}
    contenders = {"assemble": {}, "sample (all)": {"sample": 10 ** 9}, "validate": {"validate": True},
                  "no dedup": {"dedup": False}}
    for name, settings in contenders.items():
        print(f"{name} ...", flush=True)
        results[name] = assemble_once(build, scratch / "corpus", **settings)
    shutil.rmtree(scratch, ignore_errors=True)

    rows = results["assemble"]["rows"]
    for result in results.values():
        result["times_floor"] = round(result["seconds"] / max(floor, 1e-9), 1)
        result["mb_per_s"] = round(size / 2 ** 20 / max(result["seconds"], 1e-9), 1)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"assembling {rows:,} VG rows ({size / 2 ** 20:.1f} MB parquet)")
    for column in ("contender", "wall s", "CPU s", "MB/s", "x raw copy"):
        table.add_column(column)
    for name, result in results.items():
        table.add_row(name, f"{result['seconds']:.2f}", str(result.get("cpu_seconds", "-")),
                      f"{result['mb_per_s']}", f"{result['times_floor']}")
    Console().print(table)
    same = len({r["rows_digest"] for n, r in results.items() if n != "raw copy"}) == 1
    path = write_result(NAME, {
        "benchmark": NAME, "machine": machine(), "input": {
            "release_images": args.images, "tile": args.tile, "rows": rows, "parquet_bytes": size,
            "regions": sum(report.get("regions_written", {}).values()) * args.tile},
        "results": results, "same_corpus_for_every_setting": same,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"results -> {path}")
    return 0
