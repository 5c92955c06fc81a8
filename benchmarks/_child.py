"""The measured side of a benchmark: ``python -m benchmarks._child <mode> <args>`` prints one JSON line.

Modes (Visual Genome):
``builder RAW OUT N``  the suite's streaming builder (``builders.build.build_source``) with ``num_proc=N``.
``naive RAW OUT``    whole-file ``json.load`` of ``image_data.json`` and ``region_descriptions.json``, then a
                     plain loop in one process making the same rows as the builder (same ids, regions,
                     templates, seeds), checked as the builder checks them and written with the same parquet
                     writer: only the reading strategy (and the parallelism) differs.
``floor FILE...``    ``orjson.loads`` of each whole file: the least any reader that parses JSON must pay.
``stream FILE``      ``ijson`` streaming of a file's top-level array, nothing else: the builder's parse cost.
``profile RAW OUT``  the builder (one process) under cProfile: the functions with the most own time, as shares.

The synthetic ``vg_full`` release has annotations only, so every build runs with ``check_images=false``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NO_IMAGES = {"check_images": False}


def builder(raw_root: str, out: str, num_proc: str = "1") -> dict[str, Any]:
    from builders.build import build_source

    report = build_source("vg", raw_root, out, progress=False, options=NO_IMAGES, num_proc=int(num_proc))
    return {"rows": sum(sum(t.values()) for t in report.written.values()), "regions": sum(report.regions.values()),
            "skipped": sum(sum(r.values()) for r in report.skipped.values())}


def naive(raw_root: str, out: str) -> dict[str, Any]:
    from builders.boxes import checked_box, xywh_to_xyxy
    from builders.readers.paths import relative_image_path
    from builders.seeding import row_rng
    from builders.sources.base import region
    from builders.sources.captions import balanced_chunks, caption_turns
    from builders.sources.templates import REGION_CAPTION
    from builders.sources.vg import VisualGenomeBuilder
    from builders.storage.output import ShardedParquetWriter, atomic_directory

    root = Path(raw_root)
    maker = VisualGenomeBuilder(raw_root=raw_root, options=NO_IMAGES)  # make_row and the builder's row checks
    with open(root / "image_data.json") as handle:
        image_data = json.load(handle)
    with open(root / "region_descriptions.json") as handle:
        region_records = json.load(handle)

    def rows() -> Any:
        for info, record in zip(image_data, region_records, strict=True):
            image_id, width, height = info["image_id"], info["width"], info["height"]
            path = relative_image_path("/".join(info["url"].rsplit("/", 2)[-2:]))
            meta = {"layout": "release", "vg_image_id": image_id, "coco_id": info["coco_id"],
                    "flickr_id": info["flickr_id"]}
            regions = [region(checked_box(xywh_to_xyxy([r["x"], r["y"], r["width"], r["height"]]), width, height),
                              label=r["phrase"].strip(), source_id=r["region_id"]) for r in record["regions"]]
            rng = row_rng(0, f"train:{image_id}")
            rng.shuffle(regions)
            for k, (start, stop) in enumerate(balanced_chunks(len(regions), 15)):
                chunk = regions[start:stop]
                yield maker.make_row(key=f"{image_id}:{k}", split="train", task="region_caption", variant="release",
                                     image=path, image_id=str(image_id), width=width, height=height, regions=chunk,
                                     conversations=caption_turns([r["label"] for r in chunk], REGION_CAPTION, rng),
                                     meta=meta)

    written = regions_written = 0
    with atomic_directory(out) as tmp:
        writer = ShardedParquetWriter(tmp / "data", "train")
        for row in maker.checked_rows("train", rows()):
            writer.write(row)
            written += 1
            regions_written += len(row["regions"])
        writer.close()
    return {"rows": written, "regions": regions_written, "skipped": maker.report.total_skipped}


def floor(*files: str) -> dict[str, Any]:
    import orjson

    total = 0
    for name in files:
        data = Path(name).read_bytes()
        total += len(data)
        value = orjson.loads(data)
        del data, value
    return {"bytes": total}


def stream(file: str) -> dict[str, Any]:
    from builders.readers.jsonio import iter_json_array

    records = sum(1 for _ in iter_json_array(file))
    return {"records": records}


def profile(raw_root: str, out: str, top: int = 15) -> dict[str, Any]:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(builder, raw_root, out)
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {"profiled_seconds": round(total, 1),
            "top_own_time": [{"function": f"{Path(file).name}:{line}({name})", "own_share": round(tt / total, 3),
                              "cumulative_share": round(ct / total, 3), "calls": nc}
                             for (file, line, name), (_, nc, tt, ct, _) in entries]}


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (``VmHWM``), in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


MODES = {"builder": builder, "naive": naive, "floor": floor, "stream": stream, "profile": profile}

if __name__ == "__main__":
    result = MODES[sys.argv[1]](*sys.argv[2:])
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
