"""``gpt4roi corpus``: assemble a training corpus from per-source builds, following a recipe.

Steps, for each recipe entry in order (:mod:`builders.corpus.recipe`):

1. **Build** every distinct source build the recipe needs with :func:`builders.build.build_source` into the
   builds folder (``<out>.builds`` unless ``builds=`` is given), or reuse a build already there with the same
   builder, options and seed, or the ``build:`` folder the recipe names.
2. **Filter** the entry's splits (and ``variants``), **deduplicate** rows identical in image (canonical
   identity, so COCO 2014 and 2017 names agree), regions and conversation — within the entry and against
   every row already written to the same split by an earlier entry — and, with ``decontaminate=true``, drop
   rows that show an image of the recipe's evaluation splits (``decontaminate_level=region``: only rows with
   a box at IoU >= ``iou`` on such an image).
3. **Weight**: ``sample: N`` keeps the N rows whose ``sha256(seed, id)`` is smallest — a seeded rule that
   depends on neither input order nor the other sources — and ``repeat: k`` writes every kept row k times.
4. **Write** ``<out>/<entry>/<split>-NNNNN-of-NNNNN.parquet`` (Arrow batches copied through, images embedded
   with ``embed_images=true``), the contamination report of the rows written, the statistics, and the
   dataset card (:mod:`builders.corpus.card`); ``default`` is declared in the card as the union of all entries.

The whole folder is written atomically; its fingerprint is the sha256 of its parquet files (identical runs
give identical files: no timestamps, deterministic order and sampling).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from builders.corpus.builds import Build, prepare_builds
from builders.corpus.contamination import (
    ContaminationChecker,
    EvalIndex,
    RowHits,
    batch_images,
    build_eval_index,
)
from builders.corpus.digests import row_digests, sample_rank
from builders.corpus.embed import embed_images
from builders.corpus.recipe import BuildSpec, Entry, Recipe, options_dict
from builders.corpus.settings import Settings
from builders.corpus.stats import CorpusStats
from builders.corpus.tables import copy_shards, is_schema_shard, repeated, take_rows, validate_table
from builders.schema import FEATURES
from builders.storage.datafolder import SplitFiles, folder_fingerprint
from builders.storage.output import ShardedParquetWriter, atomic_directory
from builders.storage.report import package_versions
from builders.workers import default_num_proc

REPORT_NAME = "corpus_report.json"


@dataclass
class EntryCounts:
    """What happened to one entry's split, for the report and the card."""

    read: int = 0
    other_variants: int = 0
    duplicates_within: int = 0
    duplicates_across: int = 0
    decontaminated: int = 0
    candidates: int = 0
    sampled: int = 0
    written: int = 0


_CLEAN = RowHits()


@dataclass
class Candidates:
    """The rows of one entry's split that may be written: positions in the build, digests, sampling ranks.

    Digests are kept by position (``dict`` preserves insertion order) so that only the rows finally written
    are remembered for deduplication against later entries.
    """

    digests: dict[bytes, int] = field(default_factory=dict)
    positions: list[int] = field(default_factory=list)
    ranks: list[bytes] = field(default_factory=list)
    contaminated: dict[int, tuple[str, RowHits]] = field(default_factory=dict)

    def add(self, position: int, digest: bytes | None, rank: bytes | None) -> None:
        self.positions.append(position)
        if digest is not None:
            self.digests[digest] = position
        if rank is not None:
            self.ranks.append(rank)

    def sample(self, count: int | None) -> np.ndarray:
        """Positions kept by ``sample: count`` (the ``count`` smallest ranks), in build order."""
        positions = np.asarray(self.positions, dtype=np.int64)
        if count is None or count >= len(positions):
            return positions
        order = sorted(range(len(positions)), key=self.ranks.__getitem__)[:count]
        return np.sort(positions[order])

    def digests_of(self, positions: np.ndarray) -> list[bytes]:
        if len(positions) == len(self.positions):
            return list(self.digests)
        kept = set(positions.tolist())
        return [digest for digest, position in self.digests.items() if position in kept]


class Assembler:
    """Runs steps 2-4 of the module docstring for each entry, sharing dedup state and the checker."""

    def __init__(self, recipe: Recipe, settings: Settings, builds: dict[BuildSpec, Build], folder: Path,
                 index: EvalIndex):
        self.recipe = recipe
        self.settings = settings
        self.builds = builds
        self.folder = folder
        self.checker = ContaminationChecker(index, iou=settings.iou)
        self.stats = CorpusStats()
        self.seen: dict[str, set[bytes]] = defaultdict(set)  # split -> digests written by earlier entries
        self.counts: dict[str, dict[str, EntryCounts]] = {}
        self.files: dict[str, dict[str, list[str]]] = defaultdict(dict)
        self.bytes: dict[str, dict[str, int]] = defaultdict(dict)
        self.readers: ThreadPoolExecutor | None = None

    def run(self) -> None:
        threads = self.settings.num_proc or default_num_proc()
        with ThreadPoolExecutor(threads) if self.settings.embed_images and threads > 1 else nullcontext() as pool:
            self.readers = pool  # image file reads for embed_images, in order whatever the thread count
            for entry in self.recipe.sources:
                build = self.builds[entry.spec]
                for split in entry.splits:
                    self.counts.setdefault(entry.name, {})[split] = self._assemble(entry, build, split)

    def _decide(self, entry: Entry, split: str, batch: pa.RecordBatch, counts: EntryCounts,
                pool: Candidates, position: int) -> None:
        """Add the batch's rows that survive the variant filter, dedup and decontamination to ``pool``."""
        variants = batch.column("variant").to_pylist() if entry.variants else None
        counts.read += batch.num_rows
        ids = batch.column("id").to_pylist() if entry.sample is not None else None
        if not self.settings.dedup and not self.checker.index.entries:  # nothing to look at but variants
            for offset in range(batch.num_rows):
                if variants is not None and variants[offset] not in entry.variants:
                    counts.other_variants += 1
                    continue
                pool.add(position + offset, None, sample_rank(self.settings.seed, ids[offset]) if ids else None)
            return
        images = list(batch_images(batch))
        digests = row_digests(batch, images) if self.settings.dedup else [None] * len(images)
        for offset, (image, digest) in enumerate(zip(images, digests, strict=True)):
            if variants is not None and variants[offset] not in entry.variants:
                counts.other_variants += 1
                continue
            if digest is not None and digest in self.seen[split]:
                counts.duplicates_across += 1
                continue
            if digest is not None and digest in pool.digests:
                counts.duplicates_within += 1
                continue
            hits = self.checker.check(image)
            if self.settings.decontaminate and hits.contaminated(self.settings.decontaminate_level):
                counts.decontaminated += 1
                self.checker.record(entry.name, image.primary, hits, dropped=True)
                continue
            pool.add(position + offset, digest, sample_rank(self.settings.seed, ids[offset]) if ids else None)
            if hits.by_label:
                pool.contaminated[position + offset] = (image.primary, hits)

    def _assemble(self, entry: Entry, build: Build, split: str) -> EntryCounts:
        """Decide which rows of the split to write, then write them.

        Without ``sample`` each batch is decided and written in one read. When the entry could be a verbatim
        copy (no sample, repeat, embedding or validation), the first read only decides and counts; if every
        row survived, the build's shards are copied byte for byte (assembly at raw copy speed), otherwise a
        second read writes the survivors.
        """
        counts = EntryCounts()
        files = build.splits[split]
        pool = Candidates()
        writer = ShardedParquetWriter(self.folder / entry.name, split, FEATURES, self.settings.max_shard_bytes)
        verbatim = self._may_copy(entry, files)
        bar = tqdm(desc=f"{entry.name}/{split}", unit=" rows", disable=not self.settings.progress,
                   dynamic_ncols=True)
        position = 0
        for batch in files.batches(batch_rows=self.settings.batch_rows):
            before = len(pool.positions)
            self._decide(entry, split, batch, counts, pool, position)
            kept = np.asarray(pool.positions[before:], dtype=np.int64) - position
            if verbatim:
                self.stats.add(entry.name, take_rows(batch, kept))
            elif entry.sample is None:
                bar.update(self._emit(entry, build, split, writer, batch, kept))
            position += batch.num_rows
        positions = pool.sample(entry.sample)
        counts.candidates, counts.sampled = len(pool.positions), len(positions)
        if verbatim and counts.candidates == counts.read:
            paths = copy_shards(files, self.folder / entry.name)
            counts.written = counts.read
            bar.update(counts.written)
        else:
            if verbatim or entry.sample is not None:
                start = 0
                for batch in files.batches(batch_rows=self.settings.batch_rows):
                    lo, hi = np.searchsorted(positions, [start, start + batch.num_rows])
                    bar.update(self._emit(entry, build, split, writer, batch, positions[lo:hi] - start,
                                          stats=not verbatim))
                    start += batch.num_rows
            paths = writer.close()
            counts.written = writer.rows
        bar.close()
        self.seen[split].update(pool.digests_of(positions))
        for pos in positions.tolist():
            primary, hits = pool.contaminated.get(pos, ("", _CLEAN))
            self.checker.record(entry.name, primary, hits, copies=entry.repeat)
        self.files[entry.name][split] = [path.relative_to(self.folder).as_posix() for path in paths]
        self.bytes[entry.name][split] = sum(path.stat().st_size for path in paths)
        return counts

    def _may_copy(self, entry: Entry, files: SplitFiles) -> bool:
        """Whether the build's shards could become the entry's shards unchanged."""
        settings = self.settings
        return (entry.sample is None and entry.repeat == 1 and not settings.embed_images and not settings.validate
                and all(is_schema_shard(path, settings.max_shard_bytes) for path in files.paths))

    def _emit(self, entry: Entry, build: Build, split: str, writer: ShardedParquetWriter,
              batch: pa.RecordBatch, rows: np.ndarray, *, stats: bool = True) -> int:
        """Write the rows at ``rows`` (indices into ``batch``), repeated, embedded and validated as set."""
        if not len(rows):
            return 0
        table = repeated(take_rows(batch, rows), entry.repeat)
        if self.settings.embed_images:
            table = embed_images(table, build.raw_root, f"{build.folder} ({entry.name}/{split})", pool=self.readers)
        if self.settings.validate:
            validate_table(table)
        writer.write_table(table)
        if stats:
            self.stats.add(entry.name, table)
        return table.num_rows


def eval_splits(recipe: Recipe, builds: dict[BuildSpec, Build]) -> list[tuple[str, SplitFiles]]:
    """``(label, files)`` of every evaluation split of the recipe; label ``<eval entry>:<split>``."""
    return [(f"{entry.name}:{split}", builds[entry.spec].splits[split])
            for entry in recipe.eval for split in entry.splits]


def assemble(recipe: Recipe, settings: Settings) -> dict[str, Any]:
    """Build (or reuse) the sources, assemble the corpus into ``settings.out``; returns the report."""
    if settings.decontaminate_level not in ("image", "region"):
        raise ValueError(f"decontaminate_level must be image or region, got {settings.decontaminate_level!r}")
    started = time.perf_counter()
    builds = prepare_builds(recipe, settings)
    index = build_eval_index(eval_splits(recipe, builds), phash=settings.phash,
                             max_distance=settings.max_hash_distance,
                             image_roots={b.spec.builder: b.raw_root for b in builds.values() if b.raw_root})
    with atomic_directory(settings.out) as tmp:
        assembler = Assembler(recipe, settings, builds, tmp, index)
        assembler.run()
        report = {
            "recipe": recipe.raw,
            "settings": {
                "seed": settings.seed, "embed_images": settings.embed_images, "dedup": settings.dedup,
                "decontaminate": settings.decontaminate, "decontaminate_level": settings.decontaminate_level,
                "iou": settings.iou, "phash": settings.phash, "max_shard_bytes": settings.max_shard_bytes,
            },
            "fingerprint": folder_fingerprint(tmp),
            "entries": {name: {split: vars(c) for split, c in splits.items()}
                        for name, splits in assembler.counts.items()},
            "files": assembler.files,
            "bytes": assembler.bytes,
            "contamination": assembler.checker.to_dict(),
            "statistics": assembler.stats.to_dict(),
            "builds": [_build_summary(build, recipe) for build in builds.values()],
            "versions": package_versions(),
        }
        if settings.card:
            from builders.corpus.card import write_card

            write_card(tmp, recipe, report, assembler.stats, plots=settings.plots)
        report["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _build_summary(build: Build, recipe: Recipe) -> dict[str, Any]:
    entries = list(dict.fromkeys(entry.name for entry in recipe.sources + recipe.eval if entry.spec == build.spec))
    report = build.report
    return {
        "builder": build.spec.builder, "entries": entries, "folder": build.folder.name, "reused": build.reused,
        "options": report.get("options", options_dict(build.spec)), "seed": report.get("seed"),
        "rows_written": report.get("rows_written", {}), "rows_skipped": report.get("rows_skipped", {}),
        "inputs": [{"file": Path(item["path"]).name, "bytes": item["bytes"], "sha256": item["sha256"]}
                   for item in report.get("inputs", [])],
        "versions": report.get("versions", {}),
    }
