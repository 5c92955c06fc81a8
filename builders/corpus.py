"""``gpt4roi corpus``: assemble a training corpus from per-source builds, following a recipe.

Steps, for each recipe entry in order (:mod:`builders.recipe`):

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
   dataset card (:mod:`builders.card`); ``default`` is declared in the card as the union of all entries.

The whole folder is written atomically; its fingerprint is the sha256 of its parquet files (identical runs
give identical files: no timestamps, deterministic order and sampling).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .build import build_source
from .contamination import ContaminationChecker, EvalIndex, RowHits, RowImage, batch_images, build_eval_index
from .corpus_stats import CorpusStats
from .datafolder import SplitFiles, check_schema, folder_fingerprint, list_splits
from .errors import SourceFileError
from .output import DEFAULT_MAX_SHARD_BYTES, ShardedParquetWriter, atomic_directory
from .paths import resolve_under
from .recipe import BuildSpec, Entry, Recipe, options_dict, parse_recipe
from .report import package_versions
from .schema import FEATURES, validate

REPORT_NAME = "corpus_report.json"


@dataclass
class Settings:
    """The command's settings besides the recipe (see conf/corpus/config.yaml)."""

    raw_root: Path | None
    out: Path
    builds: Path | None = None
    seed: int = 0
    rebuild: bool = False
    embed_images: bool = False
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    dedup: bool = True
    decontaminate: bool = False
    decontaminate_level: str = "image"
    iou: float = 0.9
    phash: str | None = None
    max_hash_distance: int = 0
    validate: bool = False
    card: bool = True
    plots: bool = True
    progress: bool = True
    batch_rows: int = 1000

    def builds_dir(self) -> Path:
        return self.builds or self.out.parent / f"{self.out.name}.builds"


@dataclass
class Build:
    """A source build ready to read: its folder, report and the raw root its image paths are relative to."""

    spec: BuildSpec
    folder: Path
    raw_root: Path | None
    report: dict[str, Any]
    reused: bool
    splits: dict[str, SplitFiles] = field(default_factory=dict)


def _build_matches(folder: Path, spec: BuildSpec, seed: int, splits: set[str]) -> bool:
    """Whether ``folder`` holds a finished build of ``spec`` with every needed split."""
    report_path = folder / "build_report.json"
    if not report_path.is_file():
        return False
    report = json.loads(report_path.read_text())
    options = report.get("options", {})
    same = (report.get("seed") == seed and all(options.get(k) == v for k, v in options_dict(spec).items()))
    have = {split.split for split in list_splits(folder)} if same else set()
    return same and splits <= have


def prepare_builds(recipe: Recipe, settings: Settings) -> dict[BuildSpec, Build]:
    """Every build the recipe needs, built now or reused (see the module docstring)."""
    builds: dict[BuildSpec, Build] = {}
    for spec, needed in recipe.builds().items():
        raw_root = spec.raw_root(settings.raw_root) if settings.raw_root else (Path(spec.raw) if spec.raw else None)
        if spec.build:
            folder, reused = Path(spec.build), True
        else:
            if raw_root is None:
                raise ValueError(f"recipe {recipe.name}: builder {spec.builder} needs raw_root=<dir>")
            folder = settings.builds_dir() / spec.key(settings.seed)
            reused = not settings.rebuild and _build_matches(folder, spec, settings.seed, needed)
            if not reused:
                build_source(spec.builder, raw_root, folder, splits=sorted(needed), seed=settings.seed,
                             options=options_dict(spec), max_shard_bytes=settings.max_shard_bytes,
                             progress=settings.progress)
        report_path = folder / "build_report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        build = Build(spec, folder, raw_root, report, reused, {s.split: s for s in list_splits(folder)})
        missing = sorted(needed - set(build.splits))
        if missing:
            raise SourceFileError(folder, f"build of {spec.builder} lacks split(s) {missing}",
                                  expected=f"splits {sorted(needed)}")
        for split in needed:
            for path in build.splits[split].paths:
                check_schema(path, FEATURES.arrow_schema)
        builds[spec] = build
    return builds


def sample_rank(seed: int, row_id: str) -> bytes:
    """The sampling order of a row: ``sample: N`` keeps the N smallest ranks."""
    return hashlib.sha256(f"{seed}\x1fsample\x1f{row_id}".encode()).digest()[:16]


def _string_parts(array: pa.Array) -> tuple[memoryview, list[int], memoryview]:
    """A string array's UTF-8 bytes, its offsets (as ints, indexing those bytes) and its lengths (int32)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset:array.offset + len(array) + 1]
    data = array.buffers()[2]
    lengths = np.diff(offsets).astype(np.int32)
    return memoryview(data if data is not None else b""), offsets.tolist(), memoryview(lengths).cast("B")


def row_digests(batch: pa.RecordBatch, images: list[RowImage]) -> list[bytes]:
    """A digest per row of what makes two rows the same sample: image identity, boxes, labels, turns.

    Each row's boxes, labels, roles and turn texts are contiguous slices of the batch's Arrow buffers; the
    digest reads those slices and the strings' lengths (the boundaries) without building Python strings.
    """
    regions = batch.column("regions")
    region_offsets = (regions.offsets.to_numpy() - regions.offsets[0].as_py()).tolist()
    flat = regions.flatten()
    boxes = memoryview(pc.struct_field(flat, "bbox").flatten().to_numpy(zero_copy_only=False)
                       .astype(np.float32)).cast("B")
    turns = batch.column("conversations")
    turn_offsets = (turns.offsets.to_numpy() - turns.offsets[0].as_py()).tolist()
    turn_flat = turns.flatten()
    strings = [(_string_parts(pc.struct_field(flat, "label")), region_offsets),
               (_string_parts(pc.struct_field(turn_flat, "from")), turn_offsets),
               (_string_parts(pc.struct_field(turn_flat, "value")), turn_offsets)]
    digests = []
    for index, image in enumerate(images):
        r0, r1 = region_offsets[index], region_offsets[index + 1]
        digest = hashlib.blake2b(image.primary.encode(), digest_size=16)
        digest.update(boxes[16 * r0:16 * r1])
        for (data, offsets, lengths), rows in strings:
            lo, hi = rows[index], rows[index + 1]
            digest.update(lengths[4 * lo:4 * hi])
            digest.update(data[offsets[lo]:offsets[hi]])
        digests.append(digest.digest())
    return digests


def embed_images(table: pa.Table, raw_root: Path | None, where: str) -> pa.Table:
    """``table`` with each image's bytes read from ``raw_root`` (rows that already carry bytes are kept)."""
    column = table.column("image").combine_chunks()
    paths = pc.struct_field(column, "path").to_pylist()
    data = pc.struct_field(column, "bytes").to_pylist()
    ids = table.column("id").to_pylist()
    filled = []
    for row_id, path, blob in zip(ids, paths, data, strict=True):
        if blob is None:
            if raw_root is None or not path:
                raise SourceFileError(where, f"row {row_id!r}: cannot embed its image without a raw root",
                                      expected="the recipe entry's 'raw' folder")
            file = resolve_under(raw_root, path)
            if not file.is_file():
                raise SourceFileError(file, f"image of row {row_id!r} not found", expected="the image file")
            blob = file.read_bytes()
        filled.append(blob)
    image = pa.StructArray.from_arrays([pa.array(filled, pa.binary()), pa.array(paths, pa.string())],
                                       names=["bytes", "path"])
    return table.set_column(table.schema.get_field_index("image"), "image", image)


def repeated(table: pa.Table, times: int) -> pa.Table:
    """``table`` followed by ``times - 1`` copies whose ids end in ``:r2`` ... ``:r<times>``."""
    if times == 1:
        return table
    parts = [table]
    index = table.schema.get_field_index("id")
    for copy in range(2, times + 1):
        ids = pc.binary_join_element_wise(table.column("id"), pa.scalar(f":r{copy}"), "")
        parts.append(table.set_column(index, "id", ids))
    return pa.concat_tables(parts)


def _rows_of(batch: pa.RecordBatch, rows: np.ndarray) -> pa.Table:
    table = pa.Table.from_batches([batch])
    return table if len(rows) == batch.num_rows else table.take(pa.array(rows, type=pa.int64()))


def is_schema_shard(path: Path, max_bytes: int) -> bool:
    """Whether a parquet file could be a corpus shard as it is: exactly the schema's Arrow schema, and no
    bigger (uncompressed, as :class:`ShardedParquetWriter` measures) than a corpus shard may be."""
    handle = pq.ParquetFile(path)
    size = sum(handle.metadata.row_group(i).total_byte_size for i in range(handle.metadata.num_row_groups))
    return size <= max_bytes and handle.schema_arrow.equals(FEATURES.arrow_schema, check_metadata=False)


def copy_shards(files: SplitFiles, folder: Path) -> list[Path]:
    """Copy a split's shards into ``folder`` under the Hub names ``<split>-NNNNN-of-NNNNN.parquet``."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = []
    for index, path in enumerate(files.paths):
        target = folder / f"{files.split}-{index:05d}-of-{len(files.paths):05d}.parquet"
        shutil.copyfile(path, target)
        targets.append(target)
    return targets


def validate_table(table: pa.Table) -> None:
    for row in table.to_pylist():
        validate(row)


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

    def run(self) -> None:
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
                self.stats.add(entry.name, _rows_of(batch, kept))
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
        table = repeated(_rows_of(batch, rows), entry.repeat)
        if self.settings.embed_images:
            table = embed_images(table, build.raw_root, f"{build.folder} ({entry.name}/{split})")
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
            from .card import write_card

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


def print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    from .contamination import print_table, wide_console

    table = Table(title=f"corpus {report['recipe']['name']} -> {out}  ({report['seconds']:.1f} s)")
    columns = ("read", "other_variants", "duplicates_within", "duplicates_across", "decontaminated",
               "candidates", "sampled", "written")
    for column in ("config", "split", *columns):
        table.add_column(column.replace("_", " "), overflow="fold")
    for name, splits in report["entries"].items():
        for split, counts in splits.items():
            table.add_row(name, split, *(str(counts[c]) for c in columns))
    console = wide_console()
    console.print(table)
    print_table(report["contamination"], "contamination against the recipe's evaluation splits")
    console.print(f"fingerprint {report['fingerprint']}")


def settings_from_cfg(cfg: Any) -> Settings:
    return Settings(
        raw_root=Path(cfg.raw_root) if cfg.raw_root else None, out=Path(cfg.out),
        builds=Path(cfg.builds) if cfg.builds else None, seed=int(cfg.seed), rebuild=bool(cfg.rebuild),
        embed_images=bool(cfg.embed_images), max_shard_bytes=int(float(cfg.max_shard_mb) * 1024 * 1024),
        dedup=bool(cfg.dedup), decontaminate=bool(cfg.decontaminate),
        decontaminate_level=str(cfg.decontaminate_level), iou=float(cfg.iou), phash=cfg.phash,
        max_hash_distance=int(cfg.max_hash_distance), validate=bool(cfg.validate), card=bool(cfg.card),
        plots=bool(cfg.plots), progress=bool(cfg.progress))


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi corpus recipe=<name> raw_root=<dir> out=<dir> [key=value ...]``."""
    from omegaconf import OmegaConf

    recipe = parse_recipe(OmegaConf.to_container(cfg.recipe, resolve=True))
    settings = settings_from_cfg(cfg)
    report = assemble(recipe, settings)
    print_summary(report, settings.out)
    return 0
