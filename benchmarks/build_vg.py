"""Build Visual Genome at full v1.2 scale: the streaming builder against a naive whole-file loader.

Input: the synthetic ``vg_full`` release (108,077 images, ~5.4 M regions, the six v1.2 files at their real
size), generated once into ``benchmarks/scratch/`` and reused. Each contender runs in its own child process so
its peak RSS is its own (``_measure.measure``):

* ``builder num_proc=2`` — ``builders.build.build_source("vg", ..., num_proc=2)``: ijson streaming of both
  files in the main process, records converted, checked and encoded by two worker processes, written in order.
* ``builder num_proc=1`` — the same in one process (byte-identical output, checked below).
* ``naive``    — ``json.load`` of each whole file, then a Python loop making the same rows (checked below).
* ``floor``    — ``orjson.loads`` of both whole files and nothing else: no JSON reader can be faster.
* ``stream``   — ijson streaming of ``region_descriptions.json`` alone: the builder's parsing share.
* ``builders_profile`` (``--profile``) — the one-process builder under cProfile on a 3,000-image release.

Targets on a 2-core machine: the parallel builder within 3x the orjson floor, at a peak RSS under 1.5 GB
summed over all its processes. The load average and CPU time are recorded beside wall time: the machine
may be shared. Usage: ``python -m benchmarks build_vg [-- --images N --seed S --skip-naive --profile]``.
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
TARGET_TIMES_FLOOR = 3.0
PARALLEL = "builder num_proc=2"
SERIAL = "builder num_proc=1"
FLOOR = "floor (orjson whole files)"
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


def output_bytes(out: Path) -> str:
    """sha256 over the parquet files' names and bytes: equal digests mean byte-identical builds."""
    digest = hashlib.sha256()
    for shard in sorted((out / "data").glob("*.parquet")):
        digest.update(shard.name.encode() + b"\0" + shard.read_bytes())
    return digest.hexdigest()


def print_table(results: dict[str, dict[str, Any]], floor: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Visual Genome at v1.2 scale (one child process each, with its workers)")
    for column in ("approach", "wall s", "CPU s", "rows/s", "regions/s", "peak RSS MB", "x floor (wall)"):
        table.add_column(column, justify="left" if column == "approach" else "right")
    for name, result in results.items():
        rows = result.get("rows")
        rss = result.get("peak_rss_sum_mb", result["peak_rss_mb"])
        table.add_row(name, f"{result['seconds']:.1f}", f"{result['cpu_seconds']:.1f}",
                      f"{rows / result['seconds']:,.0f}" if rows else "-",
                      f"{result['regions'] / result['seconds']:,.0f}" if rows else "-",
                      f"{rss:,.0f}", f"{result['seconds'] / floor['seconds']:.2f}")
    Console().print(table)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


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
    contenders = {PARALLEL: ["builder", str(raw_root), str(outputs / "parallel"), "2"],
                  SERIAL: ["builder", str(raw_root), str(outputs / "serial"), "1"]}
    if not args.skip_naive:
        contenders["naive"] = ["naive", str(raw_root), str(outputs / "naive")]
    contenders[FLOOR] = ["floor", str(raw_root / "image_data.json"), str(raw_root / "region_descriptions.json")]
    contenders["stream (ijson regions only)"] = ["stream", str(raw_root / "region_descriptions.json")]
    for name, command in contenders.items():
        print(f"{name} ...", flush=True)
        before = load_average()
        results[name] = {**measure(command), "load_average_before": before, "load_average_after": load_average()}
        if results[name].get("rows"):  # the per-row cost, steadier than wall time on a shared machine
            results[name]["cpu_us_per_row"] = round(results[name]["cpu_seconds"] / results[name]["rows"] * 1e6, 1)
    results[SERIAL]["same_bytes_as_parallel"] = output_bytes(outputs / "serial") == output_bytes(outputs / "parallel")
    if not args.skip_naive:
        same = output_digest(outputs / "parallel") == output_digest(outputs / "naive")
        results["naive"]["same_rows_as_builder"] = same
        if not same:
            print("WARNING: the naive loop did not produce the builder's rows; its figures are not comparable")
    profile = None
    if args.profile:
        print("profile ...", flush=True)
        small_root, _ = ensure_release(args.seed, PROFILE_IMAGES)
        profile = measure(["profile", str(small_root), str(outputs / "profile")])
        for entry in profile["top_own_time"]:
            print(f"  {entry['own_share']:6.1%} own  {entry['cumulative_share']:6.1%} cum  {entry['function']}")
    shutil.rmtree(outputs, ignore_errors=True)

    floor, parallel = results[FLOOR], results[PARALLEL]
    print_table(results, floor)
    ratios = {name: round(result["seconds"] / floor["seconds"], 2) for name, result in results.items()}
    rss = parallel.get("peak_rss_sum_mb", parallel["peak_rss_mb"])
    meets = {"within_3x_orjson_floor": ratios[PARALLEL] <= TARGET_TIMES_FLOOR,
             "peak_rss_summed_under_1.5GB": rss < TARGET_RSS_MB,
             "num_proc_1_and_2_same_bytes": results[SERIAL]["same_bytes_as_parallel"]}
    print(f"times the floor: {ratios}\ntargets: {meets}")
    path = write_result(NAME, {"benchmark": NAME, "machine": machine(), "release": release,
                               "results": results, "times_floor": ratios, "builders_profile": profile,
                               "targets": {"peak_rss_mb": TARGET_RSS_MB, "times_floor": TARGET_TIMES_FLOOR,
                                           "met": meets},
                               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"results -> {path}")
    return 0
