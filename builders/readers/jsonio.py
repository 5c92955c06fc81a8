"""Reading raw annotation files with errors that name the file, the position and what was expected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
import orjson

from builders.errors import SkipRecord, SourceFileError


def read_json(path: str | Path, *, expect: type | tuple[type, ...] | None = None) -> Any:
    """Parse a whole JSON file (for the files that are small enough in every release)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        value = _lenient_loads(data)  # NaN / Infinity literals, as Python's json writes them
        if value is _INVALID:
            raise SourceFileError(path, f"invalid JSON: {exc.msg}", position=f"byte {exc.pos}",
                                  expected="a complete JSON document") from exc
    _check_type(path, value, expect, "the top level")
    return value


def iter_json_array(path: str | Path, prefix: str = "item", *, top_level: str = "array",
                    what: str = "a JSON array of records") -> Iterator[Any]:
    """Stream the elements at ``prefix`` (ijson syntax) without holding the file in memory.

    Visual Genome's ``region_descriptions.json`` is about 700 MB; a whole-file parse needs several GB.
    ``ijson``'s C backend yields one record at a time. ``top_level`` (``array`` or ``object``) is checked on the
    first byte so that a wrong file fails at once rather than after a full scan; ``what`` names the expected
    content in errors.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceFileError(path, "file not found")
    opener = {"array": b"[", "object": b"{"}[top_level]
    with path.open("rb") as handle:
        first = handle.read(64).lstrip()
        if first and not first.startswith(opener):
            raise SourceFileError(path, f"the top level is not a JSON {top_level}", position="byte 0",
                                  expected=what)
        handle.seek(0)
        done = 0
        try:
            for item in ijson.items(handle, prefix, use_float=True):
                yield item
                done += 1
        except ijson.common.IncompleteJSONError as exc:
            raise SourceFileError(path, f"invalid or truncated JSON: {exc}", position=f"record {done + 1}",
                                  expected=f"complete JSON: {what}") from exc
        except UnicodeDecodeError as exc:
            raise SourceFileError(path, f"invalid UTF-8: {exc.reason}", position=f"record {done + 1}",
                                  expected="UTF-8 text") from exc


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for every non-empty line of a JSON-lines file."""
    path = Path(path)
    if not path.exists():
        raise SourceFileError(path, "file not found")
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise SourceFileError(path, f"invalid JSON: {exc.msg}", position=f"line {number}",
                                      expected="one JSON object per line") from exc


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; invalid UTF-8 is an error naming the byte offset."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFileError(path, f"invalid UTF-8 ({exc.reason})", position=f"byte {exc.start}",
                              expected="UTF-8 text") from exc


def require_keys(record: dict, keys: tuple[str, ...], what: str) -> None:
    """Raise :class:`~builders.errors.SkipRecord` (``missing_key``) when ``record`` lacks a key."""
    if not isinstance(record, dict):
        raise SkipRecord("wrong_record_type", f"{what} is {type(record).__name__}, expected an object")
    missing = [key for key in keys if key not in record]
    if missing:
        raise SkipRecord("missing_key", f"{what} lacks {missing}")


_INVALID = object()


def _lenient_loads(data: bytes) -> Any:
    """Python's json, which accepts the NaN / Infinity literals that ``json.dump`` writes; ``_INVALID`` if not."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return _INVALID


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise SourceFileError(path, "is a directory", expected="a file") from exc


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _check_type(path: Path, value: Any, expect, where: str) -> None:
    if expect is not None and not isinstance(value, expect):
        kinds = (expect,) if isinstance(expect, type) else expect
        wanted = " or ".join(_JSON_NAMES.get(kind, kind.__name__) for kind in kinds)
        found = _JSON_NAMES.get(type(value), "null" if value is None else type(value).__name__)
        raise SourceFileError(path, f"{where} is a JSON {found}", expected=f"a JSON {wanted}")
