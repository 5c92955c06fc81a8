"""Embedding image bytes into corpus rows (``embed_images=true``) for a self-contained published corpus.

Reading the files is the job: each distinct image of a batch is read once (Visual Genome gives several rows per
image), by ``threads`` threads (file reads release the GIL), and the bytes go into the table in row order, so
the result does not depend on the thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from builders.errors import SkipRecord, SourceFileError
from builders.readers.paths import relative_image_path


def embed_images(table: pa.Table, raw_root: Path | None, where: str, *, pool: Executor | None = None) -> pa.Table:
    """``table`` with each image's bytes read from ``raw_root`` (rows that already carry bytes are kept).

    ``pool`` (e.g. a ``ThreadPoolExecutor``) reads the files concurrently; without one they are read here.
    """
    column = table.column("image").combine_chunks()
    paths = pc.struct_field(column, "path").to_pylist()
    data = pc.struct_field(column, "bytes").to_pylist()
    ids = table.column("id").to_pylist()
    files: dict[str, str] = {}  # path in the row -> file, each needed image once, first row first
    for row_id, path, blob in zip(ids, paths, data, strict=True):
        if blob is None and path not in files:
            files[path] = _image_file(raw_root, path, row_id, where)
    reads = pool.map(_read, files.values()) if pool is not None else map(_read, files.values())
    read = dict(zip(files, reads, strict=True))
    missing = next((i for i, blob in enumerate(data) if blob is None and read[paths[i]] is None), None)
    if missing is not None:
        raise SourceFileError(files[paths[missing]], f"image of row {ids[missing]!r} not found",
                              expected="the image file")
    filled = [blob if blob is not None else read[path] for path, blob in zip(paths, data, strict=True)]
    image = pa.StructArray.from_arrays([pa.array(filled, pa.binary()), pa.array(paths, pa.string())],
                                       names=["bytes", "path"])
    return table.set_column(table.schema.get_field_index("image"), "image", image)


def _image_file(raw_root: Path | None, path: str | None, row_id: str, where: str) -> str:
    """The checked file of a row's image (a string: ``Path`` objects cost a third of the embedding's CPU)."""
    if raw_root is None or not path:
        raise SourceFileError(where, f"row {row_id!r}: cannot embed its image without a raw root",
                              expected="the recipe entry's 'raw' folder")
    try:
        return os.path.join(raw_root, relative_image_path(path))
    except SkipRecord as error:
        raise SourceFileError(where, f"row {row_id!r}: {error.detail}", expected="an image path under the raw root") from error


def _read(file: str) -> bytes | None:
    """The file's bytes, or ``None`` when it is missing or not a regular file (reported by the caller)."""
    try:
        with open(file, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
