"""Embedding image bytes into corpus rows (``embed_images=true``) for a self-contained published corpus."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from builders.errors import SourceFileError
from builders.readers.paths import resolve_under


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
