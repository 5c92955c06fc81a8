"""Arrow table helpers of the assembler: repeating, selecting, copying and validating shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from builders.schema import FEATURES, validate
from builders.storage.datafolder import SplitFiles


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


def take_rows(batch: pa.RecordBatch, rows: np.ndarray) -> pa.Table:
    """The rows at positions ``rows`` of ``batch`` as a table; the batch itself, uncopied, when all are kept."""
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
