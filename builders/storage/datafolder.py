"""Reading the parquet folders the suite writes: source builds and Hub-style corpus folders.

A build (``gpt4roi build``) is ``<folder>/data/<split>-NNNNN-of-NNNNN.parquet`` + ``build_report.json``; a
corpus (``gpt4roi corpus``) is ``<folder>/<config>/<split>-NNNNN-of-NNNNN.parquet`` + ``README.md``. Both
are read here as ``(config, split) -> shard paths`` (``config`` is ``None`` for a build) and streamed as
Arrow record batches, so that assembly and contamination checks copy Arrow data without decoding rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from builders.errors import SourceFileError

SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")
BUILD_DATA_DIR = "data"
BATCH_ROWS = 1000


@dataclass(frozen=True)
class SplitFiles:
    """The shards of one split of one config (``config=None`` for a source build)."""

    config: str | None
    split: str
    paths: tuple[Path, ...]

    def num_rows(self) -> int:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in self.paths)

    def batches(self, columns: list[str] | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The split's rows as record batches, shard by shard, in file order."""
        for path in self.paths:
            try:
                handle = pq.ParquetFile(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise SourceFileError(path, f"unreadable parquet shard: {exc}", expected="a parquet file") from exc
            yield from handle.iter_batches(batch_size=batch_rows, columns=columns)


def list_splits(folder: str | Path) -> list[SplitFiles]:
    """Every ``(config, split)`` of a build or corpus folder, with its shards in index order.

    Raises :class:`SourceFileError` for a missing folder, no shards, or an incomplete shard set (a shard
    ``k-of-n`` missing), which would otherwise silently drop rows.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceFileError(folder, "not a folder", expected="a build or corpus folder of parquet shards")
    groups: dict[tuple[str | None, str], dict[int, Path]] = {}
    totals: dict[tuple[str | None, str], int] = {}
    for path in sorted(folder.glob("*/*.parquet")):
        match = SHARD_NAME.match(path.name)
        if not match:
            raise SourceFileError(path, "unexpected parquet file name", expected="<split>-NNNNN-of-NNNNN.parquet")
        config = None if path.parent.name == BUILD_DATA_DIR else path.parent.name
        key = (config, match["split"])
        groups.setdefault(key, {})[int(match["index"])] = path
        totals[key] = int(match["total"])
    if not groups:
        raise SourceFileError(folder, "no parquet shards found", expected="<config or data>/<split>-*.parquet")
    result = []
    for key in sorted(groups, key=lambda item: (item[0] or "", item[1])):
        shards, total = groups[key], totals[key]
        if sorted(shards) != list(range(total)):
            missing = sorted(set(range(total)) - set(shards))
            raise SourceFileError(folder, f"config {key[0] or BUILD_DATA_DIR!r} split {key[1]!r} lacks shards "
                                  f"{missing} of {total}", expected="a complete shard set")
        result.append(SplitFiles(key[0], key[1], tuple(shards[index] for index in range(total))))
    return result


def check_schema(path: Path, expected: pa.Schema) -> None:
    """Raise :class:`SourceFileError` naming the shard when its columns or their types differ from ``expected``."""
    try:
        actual = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceFileError(path, f"unreadable parquet shard: {exc}", expected="a parquet file") from exc
    if actual.equals(expected, check_metadata=False):
        return
    missing = [name for name in expected.names if name not in actual.names]
    extra = [name for name in actual.names if name not in expected.names]
    differing = [name for name in expected.names
                 if name in actual.names and actual.field(name).type != expected.field(name).type]
    problems = [f"missing columns {missing}" if missing else "", f"unknown columns {extra}" if extra else "",
                f"columns of another type {differing}" if differing else ""]
    raise SourceFileError(path, "; ".join(p for p in problems if p) or "column order differs",
                          expected="the spatial-instruction schema (builders.schema.FEATURES)")


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over every parquet file's relative path and content, in sorted order (the corpus identity)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.parquet")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()
