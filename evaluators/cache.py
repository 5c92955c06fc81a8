"""The answer cache: one SQLite row per answered request, committed per batch.

Key: (model fingerprint, task scope, request key, generation settings). The runner commits after every batch
(SQLite's journal makes each commit atomic), so a run killed at any point loses at most the batch in flight,
and the next run asks the model only for what is missing. WAL mode lets a reader (the leaderboard, a second
runner) look at the file while a run writes to it.
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
LOOKUP_CHUNK = 500


class AnswerCache:
    """Answers (JSON-encoded strings or floats) of one model, persisted in ``path``."""

    def __init__(self, path: str | Path, model_fingerprint: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.model = model_fingerprint
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.db.commit()

    def get_many(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Any]:
        """The cached answers among ``keys`` (scope, request, settings)."""
        found: dict[tuple[str, str, str], Any] = {}
        by_scope: dict[tuple[str, str], list[str]] = {}
        for scope, request, settings in keys:
            by_scope.setdefault((scope, settings), []).append(request)
        for (scope, settings), requests in by_scope.items():
            for start in range(0, len(requests), LOOKUP_CHUNK):
                chunk = requests[start:start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    f"SELECT request, answer FROM answers WHERE model=? AND scope=? AND settings=? "
                    f"AND request IN ({marks})", (self.model, scope, settings, *chunk))
                for request, answer in rows:
                    found[(scope, request, settings)] = json.loads(answer)
        return found

    def put_many(self, items: Iterable[tuple[tuple[str, str, str], Any]]) -> None:
        """Store answers and commit (one transaction)."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                [(self.model, scope, request, settings, json.dumps(answer), now)
                 for (scope, request, settings), answer in items])

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers WHERE model=?", (self.model,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
