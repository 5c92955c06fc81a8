"""Deterministic file writing for the raw releases: JSON, JSON lines, pickles, shared images."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson


def write_json(path: Path, value: Any) -> None:
    """One JSON document; keys keep their (deterministic) insertion order, like the real releases."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(value))


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record) + b"\n")


def write_pickle(path: Path, value: Any, protocol: int = 2) -> None:
    """Protocol 2 by default, as the Python-2-era RefCOCO pickles (plain containers only).

    Pickles holding numpy arrays need protocol >= 3: under 2, array bytes are rebuilt through
    ``_codecs.encode``, which a restricted unpickler rightly refuses.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=protocol))


def link_or_copy(source: Path, target: Path) -> None:
    """Share one picture between releases: a hard link where the file system allows it, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class JsonArrayWriter:
    """Streams a top-level JSON array one element at a time (bounded memory for full-size releases)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("wb", buffering=1 << 20)
        self._handle.write(b"[")
        self._first = True

    def append(self, value: Any) -> None:
        self.append_raw(orjson.dumps(value))

    def append_raw(self, encoded: bytes) -> None:
        self._handle.write(encoded if self._first else b", " + encoded)
        self._first = False

    def close(self) -> None:
        self._handle.write(b"]")
        self._handle.close()

    def __enter__(self) -> JsonArrayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
