"""``gpt4roi build``: run one source builder into a Hub-style folder with a build report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from builders.sources import builder_class
from builders.sources.base import RegionBuilder
from builders.storage.output import DEFAULT_MAX_SHARD_BYTES, ShardedParquetWriter, atomic_directory
from builders.storage.report import BuildReport
from builders.workers import BuilderSpec, Workers, default_num_proc, write_split


def make_builder(source: str, raw_root: str | Path, *, seed: int = 0, strict: bool = False,
                 options: dict[str, Any] | None = None, cache_dir: str | Path | None = None) -> RegionBuilder:
    """Instantiate the builder of ``source`` for a raw release folder."""
    cls = builder_class(source)
    return cls(raw_root=str(raw_root), seed=seed, strict=strict, options=dict(options or {}),
               cache_dir=str(cache_dir) if cache_dir else None)


def build_source(source: str, raw_root: str | Path, out: str | Path, *, splits: list[str] | None = None,
                 seed: int = 0, strict: bool = False, options: dict[str, Any] | None = None,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, progress: bool = True,
                 num_proc: int | None = None) -> BuildReport:
    """Build ``source`` from ``raw_root`` into ``out`` (``data/<split>-*.parquet`` + ``build_report.json``).

    The folder appears only when the whole build succeeded (see :func:`builders.storage.output.atomic_directory`).
    ``num_proc`` worker processes (default: the machine's cores) check and encode the rows, and convert the
    records of builders that cut their work into units (:mod:`builders.workers`); the output is byte-identical
    whatever ``num_proc``.
    """
    builder = make_builder(source, raw_root, seed=seed, strict=strict, options=options)
    # workers get the resolved options: a default patched in this process (tests do) would not reach them
    spec = BuilderSpec(source, str(raw_root), seed, strict, dict(builder.options))
    available = builder.available_splits()
    if not available:
        raise FileNotFoundError(f"{source}: no split's raw files were found under {raw_root}")
    wanted = available if not splits else list(splits)
    unknown = [split for split in wanted if split not in available]
    if unknown:
        raise ValueError(f"{source}: split(s) {unknown} not available under {raw_root}; available: {available}")

    started = time.perf_counter()
    workers = Workers(spec, default_num_proc() if num_proc is None else int(num_proc))
    with atomic_directory(out) as tmp, workers:
        for split in wanted:
            writer = ShardedParquetWriter(tmp / "data", split, max_shard_bytes=max_shard_bytes)
            bar = tqdm(desc=f"{source}/{split}", unit=" rows", disable=not progress, dynamic_ncols=True)
            write_split(builder, split, writer, workers, on_rows=bar.update)
            bar.close()
            writer.close()
        report = builder.report
        report.seconds = time.perf_counter() - started
        (tmp / "build_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def print_summary(report: BuildReport, out: str | Path) -> None:
    """A readable table of rows, regions and skips per split on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.source} -> {out}  ({report.seconds:.1f} s)")
    for column in ("split", "task", "rows", "regions", "skipped (reason: count)"):
        table.add_column(column)
    for split in sorted(set(report.written) | set(report.skipped)):
        tasks = report.written.get(split, {})
        skips = ", ".join(f"{reason}: {count}" for reason, count in sorted(report.skipped.get(split, {}).items()))
        table.add_row(split, ", ".join(sorted(tasks)) or "-", str(sum(tasks.values())),
                      str(report.regions.get(split, 0)), skips or "0")
    Console().print(table)


def main(cfg: Any) -> None:
    """Entry point of ``gpt4roi build source=<name> raw_root=<dir> out=<dir> [split=...] [strict=true]``."""
    splits = cfg.split
    if isinstance(splits, str):
        splits = [splits]
    from omegaconf import OmegaConf

    # Plain containers: list options (e.g. vcr's variants) must reach the report's JSON as lists.
    options = OmegaConf.to_container(cfg.source.get("options", None) or {}, resolve=True)
    report = build_source(cfg.source.name, cfg.raw_root, cfg.out, splits=list(splits) if splits else None,
                          seed=cfg.seed, strict=cfg.strict, options=options,
                          max_shard_bytes=int(cfg.max_shard_mb * 1024 * 1024), num_proc=cfg.num_proc)
    print_summary(report, cfg.out)
