"""Build Visual Genome at full v1.2 scale: the streaming builder against a naive whole-file loader.

Input: the synthetic ``vg_full`` release (108,077 images, ~5.4 M regions, the six v1.2 files at their real
size), generated once into ``benchmarks/scratch/`` and reused. Each contender runs in its own child process so
its peak RSS is its own (``_measure.measure``):

* ``builder``  — ``builders.build.build_source("vg", ...)``: ijson streaming of both files, rows to parquet.
* ``naive``    — ``json.load`` of each whole file, then a Python loop making the same rows (checked below).
* ``floor``    — ``orjson.loads`` of both whole files and nothing else: no JSON reader can be faster.
* ``stream``   — ijson streaming of ``region_descriptions.json`` alone: the builder's parsing share.

Targets on a 2-core machine: builder peak RSS < 1.5 GB and wall time < 5 minutes.
Usage: ``python -m benchmarks build_vg [-- --images N --seed S --skip-naive --profile]``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ._measure import WORK, machine, measure, write_result

NAME = "build_vg"
TARGET_RSS_MB = 1536
TARGET_SECONDS = 300
PROFILE_IMAGES = 3000  # cProfile slows the builder about threefold: profile a slice, not the full release


def ensure_release(seed: int, images: int | None) -> tuple[Path, dict[str, Any]]:
    """The vg_full release for (seed, images), generated unless a complete one is already there."""
    from builders.synthetic import synthesize
    from builders.synthetic.vg_full import VG_IMAGES

    images = images or VG_IMAGES
    folder = WORK / f"vg_full_seed{seed}_{images}"
    stamp = folder / "synth_summary.json"
    if stamp.is_file():
        return folder / "vg", json.loads(stamp.read_text())
    print(f"generating the vg_full release ({images:,} images) into {folder} ...", flush=True)
    started = time.perf_counter()
    summary = synthesize(folder, "vg_full", seed, vg_images=images)["vg"]
    summary = {**summary, "seconds": round(time.perf_counter() - started, 1),
               "file_mb": {path.name: round(path.stat().st_size / 2 ** 20, 1)
                           for path in sorted((folder / "vg").glob("*.json"))}}
    stamp.write_text(json.dumps(summary, indent=2) + "\n")
    return folder / "vg", summary


def output_digest(out: Path) -> str:
    """sha256 of the built rows' ids and region counts in order: equal digests mean the same rows."""
    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    for shard in sorted(glob.glob(str(out / "data" / "*.parquet"))):
        table = pq.read_table(shard, columns=["id", "regions"])
        ids = table.column("id").to_pylist()
        lengths = table.column("regions").combine_chunks().value_lengths().to_pylist()
        for row_id, length in zip(ids, lengths, strict=True):
            digest.update(f"{row_id}\x1f{length}\n".encode())
    return digest.hexdigest()


def print_table(results: dict[str, dict[str, Any]], builder: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Visual Genome at v1.2 scale (one child process each)")
    for column in ("approach", "wall s", "CPU s", "rows/s", "regions/s", "peak RSS MB", "time / builder", "RSS / builder"):
        table.add_column(column, justify="left" if column == "approach" else "right")
    for name, result in results.items():
        rows = result.get("rows")
        table.add_row(name, f"{result['seconds']:.1f}", f"{result['cpu_seconds']:.1f}",
                      f"{rows / result['seconds']:,.0f}" if rows else "-",
                      f"{result['regions'] / result['seconds']:,.0f}" if rows else "-",
                      f"{result['peak_rss_mb']:,.0f}", f"{result['seconds'] / builder['seconds']:.2f}",
                      f"{result['peak_rss_mb'] / builder['peak_rss_mb']:.2f}")
    Console().print(table)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks build_vg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=None, help="fewer images than the real 108,077 (quick runs)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the whole-file loader (needs several GB)")
    parser.add_argument("--profile", action="store_true",
                        help=f"also profile the builder (cProfile) on a {PROFILE_IMAGES:,}-image release")
    args = parser.parse_args(argv)

    raw_root, release = ensure_release(args.seed, args.images)
    outputs = WORK / f"out-{os.getpid()}"  # per run: two runs at once must not delete each other's outputs
    results: dict[str, dict[str, Any]] = {}
    print("builder ...", flush=True)
    results["builder"] = measure(["builder", str(raw_root), str(outputs / "builder")])
    if not args.skip_naive:
        print("naive ...", flush=True)
        results["naive"] = measure(["naive", str(raw_root), str(outputs / "naive")])
        same = output_digest(outputs / "builder") == output_digest(outputs / "naive")
        results["naive"]["same_rows_as_builder"] = same
        if not same:
            print("WARNING: the naive loop did not produce the builder's rows; its figures are not comparable")
    print("floor / stream ...", flush=True)
    results["floor (orjson whole files)"] = measure(["floor", str(raw_root / "image_data.json"),
                                                     str(raw_root / "region_descriptions.json")])
    results["stream (ijson regions only)"] = measure(["stream", str(raw_root / "region_descriptions.json")])
    profile = None
    if args.profile:
        print("profile ...", flush=True)
        small_root, _ = ensure_release(args.seed, PROFILE_IMAGES)
        profile = measure(["profile", str(small_root), str(outputs / "profile")])
        for entry in profile["top_own_time"]:
            print(f"  {entry['own_share']:6.1%} own  {entry['cumulative_share']:6.1%} cum  {entry['function']}")
    shutil.rmtree(outputs, ignore_errors=True)

    builder = results["builder"]
    print_table(results, builder)
    meets = {"peak_rss_under_1.5GB": builder["peak_rss_mb"] < TARGET_RSS_MB,
             "wall_under_5min": builder["seconds"] < TARGET_SECONDS}
    print(f"targets: {meets}")
    path = write_result(NAME, {"benchmark": NAME, "machine": machine(), "release": release,
                               "results": results, "builder_profile": profile, "targets": {"peak_rss_mb": TARGET_RSS_MB,
                                                               "seconds": TARGET_SECONDS, "met": meets},
                               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"results -> {path}")
    return 0
