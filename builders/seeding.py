"""Per-row deterministic randomness.

Every random choice a builder makes (a template, a region order, a grouping) is drawn from a generator seeded
by ``(seed, row id)``. Rows therefore come out byte-identical whatever the input order, the number of worker
processes or which other rows were skipped.
"""

from __future__ import annotations

import hashlib
import random


def row_rng(seed: int, key: str) -> random.Random:
    """A ``random.Random`` seeded from ``seed`` and a stable string key (usually the row id)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))
