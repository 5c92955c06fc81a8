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

Then **embedding images** (``embed_images=true``, what a user publishing a self-contained corpus runs) on a
synthetic world of ``--embed-images`` images (20,000 by default): the ``vg_full`` release of that many images,
each with an image file (the small synthetic world's pictures, copied round-robin: distinct files, realistic
bytes), built with ``max_turns`` high enough for one row per image. Timed after one warm-up read:

* ``cat floor``        — ``xargs cat`` of every row's image file, in row order, into one file on the output
  disk: the least any embedding must pay to read and write the same bytes.
* ``embed num_proc=1`` — ``gpt4roi corpus``'s assembly (dedup, statistics, card and plots) with embedded
  images, reading the files in this process.
* ``embed num_proc=2`` — the same with two reader threads (byte-identical output, checked).

Usage: ``python -m benchmarks corpus_assembly [-- --images N --tile K --seed S --embed-images N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
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
        build_source("vg", raw_root, folder, seed=seed, progress=False, options={"check_images": False})
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


EMBED_OPTIONS = {"max_turns": 10_000}  # one row per image: the corpus embeds each image file once


def embed_world(seed: int, images: int) -> Path:
    """The vg_full release of ``images`` images, each with an image file (see the module docstring)."""
    from builders.synthetic import synthesize

    from .build_vg import ensure_release

    raw_root, _ = ensure_release(seed, images)
    stamp = raw_root / "images_written.json"
    if stamp.is_file():
        return raw_root
    pictures_world = WORK / f"world_small_seed{seed}"
    if not (pictures_world / "vg").is_dir():
        synthesize(pictures_world, "small", seed, variants=False)
    pictures = sorted((pictures_world / "vg").glob("VG_100K*/*.jpg"))
    print(f"writing {images:,} image files from {len(pictures)} pictures ...", flush=True)
    records = json.loads((raw_root / "image_data.json").read_text())
    for index, record in enumerate(records):
        target = raw_root.joinpath(*record["url"].rsplit("/", 2)[-2:])
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(pictures[index % len(pictures)], target)
    stamp.write_text(json.dumps({"images": len(records), "pictures": len(pictures)}) + "\n")
    return raw_root


def cat_floor(files: list[Path], target: Path) -> dict[str, float]:
    """``xargs cat`` of ``files`` into ``target``: wall and CPU seconds (of the child processes)."""
    listing = b"\0".join(str(path).encode() for path in files)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(target, "wb") as out:
        subprocess.run(["xargs", "-0", "cat"], input=listing, stdout=out, check=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "bytes": target.stat().st_size}


def embed_once(raw_root: Path, out: Path, builds: Path, num_proc: int) -> dict[str, Any]:
    from builders.corpus.assembler import assemble
    from builders.corpus.recipe import parse_recipe
    from builders.corpus.settings import Settings

    recipe = parse_recipe({"name": "embed", "sources": {"vg": {"builder": "vg", "raw": raw_root.name,
                                                               "options": EMBED_OPTIONS, "splits": ["train"]}}})
    settings = Settings(raw_root=raw_root.parent, out=out, builds=builds, embed_images=True, progress=False,
                        num_proc=num_proc)
    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    report = assemble(recipe, settings)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert all(build["reused"] for build in report["builds"]), "the build must be made before the timed runs"
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "rows": report["entries"]["vg"]["train"]["written"],
            "fingerprint": report["fingerprint"], "bytes": parquet_bytes(out), "load_average": list(os.getloadavg())}


def embed_benchmark(seed: int, images: int) -> dict[str, Any]:
    """``cat`` floor against assembly with embedded images (module docstring); printed and returned."""
    import pyarrow.parquet as pq

    from builders.build import build_source
    from builders.corpus.recipe import parse_recipe
    from builders.corpus.settings import Settings

    raw_root = embed_world(seed, images)
    scratch = WORK / NAME / "embed"
    builds = WORK / NAME / f"embed_builds_seed{seed}_{images}"
    recipe = parse_recipe({"name": "embed", "sources": {"vg": {"builder": "vg", "raw": raw_root.name,
                                                               "options": EMBED_OPTIONS, "splits": ["train"]}}})
    (spec,) = recipe.builds()
    folder = Settings(raw_root=raw_root.parent, out=scratch, builds=builds).builds_dir() / spec.key(seed)
    if not (folder / "build_report.json").is_file():
        print(f"building vg ({images:,} images, one row each) ...", flush=True)
        build_source("vg", raw_root, folder, splits=["train"], seed=seed, options=EMBED_OPTIONS, progress=False)
    paths = [raw_root / path for shard in sorted((folder / "data").glob("*.parquet"))
             for path in pq.read_table(shard, columns=["image"]).column("image").combine_chunks().field("path").to_pylist()]
    scratch.mkdir(parents=True, exist_ok=True)
    cat_floor(paths, scratch / "warmup.bin")  # page cache warm for everyone
    floor = min((cat_floor(paths, scratch / "cat.bin") for _ in range(3)), key=lambda result: result["seconds"])
    results: dict[str, dict[str, Any]] = {"cat floor": {**floor, "files": len(paths)}}
    for num_proc in (1, 2):
        print(f"embed num_proc={num_proc} ...", flush=True)
        results[f"embed num_proc={num_proc}"] = embed_once(raw_root, scratch / "corpus", builds, num_proc)
    shutil.rmtree(scratch, ignore_errors=True)
    for result in results.values():
        result["times_floor_wall"] = round(result["seconds"] / floor["seconds"], 2)
        result["mb_per_s"] = round(floor["bytes"] / 2 ** 20 / result["seconds"], 1)
    same = results["embed num_proc=1"]["fingerprint"] == results["embed num_proc=2"]["fingerprint"]

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"embedding {len(paths):,} images ({floor['bytes'] / 2 ** 20:,.0f} MB) into a corpus")
    for column in ("contender", "wall s", "CPU s", "image MB/s", "x cat floor (wall)"):
        table.add_column(column)
    for name, result in results.items():
        table.add_row(name, f"{result['seconds']:.2f}", f"{result['cpu_seconds']:.2f}", f"{result['mb_per_s']}",
                      f"{result['times_floor_wall']}")
    Console().print(table)
    return {"images": len(paths), "image_bytes": floor["bytes"], "results": results,
            "same_corpus_for_num_proc_1_and_2": same,
            "target": {"times_floor": 2.0, "met": results["embed num_proc=2"]["times_floor_wall"] <= 2.0}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks corpus_assembly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=3000, help="images of the vg_full release (108077 = real)")
    parser.add_argument("--tile", type=int, default=10, help="copies of the build, with distinct image ids")
    parser.add_argument("--embed-images", type=int, default=20_000, help="images of the embedding world (0: skip)")
    args = parser.parse_args(argv or [])
    embedding = embed_benchmark(args.seed, args.embed_images) if args.embed_images else None

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
        "results": results, "same_corpus_for_every_setting": same, "embed_images": embedding,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"results -> {path}")
    return 0
