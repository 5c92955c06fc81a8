"""Streaming the record lists of a COCO-format file too large for a whole-file parse.

GRiT's Visual Genome ``train.json`` holds millions of annotations; ``orjson.loads`` of it needs several GB
before a single row is written. :func:`iter_coco_records` streams ``images`` or ``annotations`` with ijson's
C backend, one record at a time, so a builder keeps only what it needs of each record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson

from .errors import SourceFileError


def iter_coco_records(path: str | Path, key: str) -> Iterator[Any]:
    """The elements of the list ``key`` (``images``, ``annotations``) of a COCO-format JSON object."""
    path = Path(path)
    if not path.is_file():
        raise SourceFileError(path, "file not found")
    with path.open("rb") as handle:
        first = handle.read(64).lstrip()
        if first and not first.startswith(b"{"):
            raise SourceFileError(path, "the top level is not a JSON object", position="byte 0",
                                  expected="a COCO-format object with 'images' and 'annotations'")
        handle.seek(0)
        done = 0
        try:
            for item in ijson.items(handle, f"{key}.item", use_float=True):
                yield item
                done += 1
        except ijson.common.IncompleteJSONError as exc:
            raise SourceFileError(path, f"invalid or truncated JSON: {exc}", position=f"{key} record {done}",
                                  expected="a complete COCO-format JSON object") from exc
        except UnicodeDecodeError as exc:
            raise SourceFileError(path, f"invalid UTF-8: {exc.reason}", position=f"{key} record {done}",
                                  expected="UTF-8 text") from exc
