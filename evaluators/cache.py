"""The answer cache: one SQLite row per answered request, committed per batch.

Key: (model fingerprint, task scope, request key, generation settings). The runner commits after every batch
(SQLite's journal makes each commit atomic), so a run killed at any point loses at most the batch in flight,
and the next run asks the model only for what is missing. WAL mode lets a reader (the leaderboard, a second
runner) look at the file while a run writes to it.

A cache file that cannot be used (not a database, damaged, another program's tables, an answer that is not
JSON) raises :class:`CacheError` naming the file and what to do. :func:`prepare_cache` runs every check before
the runner loads a model, so a bad cache costs seconds, not a model load; ``rebuild=True`` sets the file aside
and starts an empty one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL,
    scope TEXT NOT NULL,
    request TEXT NOT NULL,
    settings TEXT NOT NULL,
    answer TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, scope, request, settings)
) WITHOUT ROWID
"""
COLUMNS = ("model", "scope", "request", "settings", "answer", "created")
LOOKUP_CHUNK = 500
SIDECARS = ("-wal", "-shm")  # SQLite's files beside the database; they move with it


class CacheError(ValueError):
    """An answer cache file that cannot be used; the message names the file and the ways out."""

    def __init__(self, path: Path, problem: str, *, rebuildable: bool = True):
        self.path = path
        remedy = (" or pass rebuild_cache=true to set this one aside and start an empty cache" if rebuildable
                  else "")
        super().__init__(f"answer cache {path}: {problem}. Point cache= at another file{remedy}")


def _unusable(path: Path, what: str, exc: sqlite3.DatabaseError) -> Exception:
    """The error to raise for ``exc``: a :class:`CacheError`, except a lock timeout (another process is
    writing; the file is fine), which stays as it is."""
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return exc
    return CacheError(path, f"{what} ({exc})")


def _connect(path: Path) -> sqlite3.Connection:
    """An open connection in WAL mode with the answers table, after the file's schema has been checked."""
    try:
        db = sqlite3.connect(path, timeout=60)
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, "cannot be opened", exc) from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "answers" not in tables:
            raise CacheError(path, f"a SQLite database of another program (tables: {', '.join(sorted(tables))}; "
                                   "an answer cache has one table, answers)")
        if "answers" in tables:
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(answers)"))
            if columns != COLUMNS:
                raise CacheError(path, f"its answers table has columns ({', '.join(columns)}), not an answer "
                                       f"cache's ({', '.join(COLUMNS)})")
        db.execute(_SCHEMA)
        db.commit()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _unusable(path, "damaged or not a SQLite database", exc) from None
    except CacheError:
        db.close()
        raise
    return db


def _decode(path: Path, key: tuple[str, str, str], answer: str) -> Any:
    try:
        return json.loads(answer)
    except (TypeError, json.JSONDecodeError) as exc:
        scope, request, _ = key
        raise CacheError(path, f"the cached answer to request {request!r} of {scope!r} is not JSON "
                               f"({exc}; it starts {str(answer)[:40]!r})") from None


def check_cache(path: Path) -> None:
    """Every check at once: the schema, SQLite's page-level ``quick_check``, and that every answer is JSON.

    SQLite's ``json_valid`` narrows the scan to candidates; Python decides (it also reads ``NaN`` and
    ``Infinity``, which ``json.dumps`` writes for non-finite scores).
    """
    db = _connect(path)
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise CacheError(path, f"the database is damaged ({'; '.join(problems[:3])})")
        for scope, request, settings, answer in db.execute(
                "SELECT scope, request, settings, answer FROM answers WHERE NOT json_valid(answer)"):
            _decode(path, (scope, request, settings), answer)
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, "the database is damaged", exc) from None
    finally:
        db.close()


def set_aside(path: Path) -> Path:
    """Rename ``path`` (and its WAL files) to the first free ``<name>.old``, ``<name>.old1``, ...; the new name."""
    suffix = ".old"
    for number in range(1, 10_000):
        target = path.with_name(path.name + suffix)
        if not any(target.with_name(target.name + extra).exists() for extra in ("", *SIDECARS)):
            break
        suffix = f".old{number}"
    for extra in ("", *SIDECARS):
        source = path.with_name(path.name + extra)
        if source.exists():
            source.rename(target.with_name(target.name + extra))
    return target


def prepare_cache(path: str | Path, *, rebuild: bool = False) -> Path:
    """The cache file, checked (or, with ``rebuild``, the old one set aside); call it before loading a model."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise CacheError(path, "not a file (a folder or a device)", rebuildable=False)
    if rebuild and path.exists():
        print(f"rebuild_cache: {path} set aside as {set_aside(path)}; starting an empty answer cache")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(path, f"its folder cannot be created ({exc.strerror or exc})", rebuildable=False) from None
    check_cache(path)
    return path


def remove_cache(path: Path) -> None:
    """Delete a cache file and SQLite's files beside it (after its answers were merged elsewhere)."""
    for extra in ("", *SIDECARS):
        path.with_name(path.name + extra).unlink(missing_ok=True)


class AnswerCache:
    """Answers (JSON-encoded strings or floats) of one model, persisted in ``path``."""

    def __init__(self, path: str | Path, model_fingerprint: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.model = model_fingerprint
        self.db = _connect(self.path)

    def get_many(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Any]:
        """The cached answers among ``keys`` (scope, request, settings)."""
        found: dict[tuple[str, str, str], Any] = {}
        by_scope: dict[tuple[str, str], list[str]] = {}
        for scope, request, settings in keys:
            by_scope.setdefault((scope, settings), []).append(request)
        try:
            for (scope, settings), requests in by_scope.items():
                for start in range(0, len(requests), LOOKUP_CHUNK):
                    chunk = requests[start:start + LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self.db.execute(
                        f"SELECT request, answer FROM answers WHERE model=? AND scope=? AND settings=? "
                        f"AND request IN ({marks})", (self.model, scope, settings, *chunk))
                    for request, answer in rows:
                        key = (scope, request, settings)
                        found[key] = _decode(self.path, key, answer)
        except sqlite3.DatabaseError as exc:
            raise _unusable(self.path, "the database is damaged", exc) from None
        return found

    def put_many(self, items: Iterable[tuple[tuple[str, str, str], Any]]) -> None:
        """Store answers and commit (one transaction)."""
        now = time.time()
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                    [(self.model, scope, request, settings, json.dumps(answer), now)
                     for (scope, request, settings), answer in items])
        except sqlite3.DatabaseError as exc:
            raise _unusable(self.path, "an answer could not be stored", exc) from None

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers WHERE model=?", (self.model,)).fetchone()[0]

    def merge(self, other: Path) -> int:
        """Copy every answer of another cache file (any model) into this one, in one transaction; how many.

        A multi-process evaluation writes one file per rank (:mod:`evaluators.distributed`); a run killed before
        its ranks' answers met leaves those files, and the next run merges them here before it starts.
        """
        check_cache(other)
        try:
            self.db.execute("ATTACH DATABASE ? AS other", (str(other),))
            try:
                with self.db:
                    copied = self.db.execute("INSERT OR REPLACE INTO answers SELECT * FROM other.answers").rowcount
            finally:
                self.db.execute("DETACH DATABASE other")
        except sqlite3.DatabaseError as exc:
            raise _unusable(other, "its answers could not be merged", exc) from None
        return copied

    def close(self) -> None:
        self.db.close()
