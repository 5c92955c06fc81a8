"""``gpt4roi eval`` over several processes (``torchrun``, one node or many): who answers what, and where it is kept.

Every rank builds the same tasks, lists the same requests, cuts them into the model calls one process would
make (``runner.batches_of``) and makes every ``world``-th of those calls (:meth:`Ranks.shard`): the shards are
disjoint and balanced, and a fresh run's answers are bit for bit those of one process. Answers are kept
kill-safe in one SQLite file per rank (``<cache>.rank<r>``, committed per batch as in a single run); after
each task the ranks' answers meet on
rank 0 (:meth:`Ranks.gather`), which writes them into the shared cache, scores the task and writes the results a
single process would have written. Only then do the ranks move on (a barrier), so a later task that repeats
earlier requests (``vcr_q_ar``) finds them in the shared cache, whichever rank answered them.

A run killed part-way leaves its rank files; the next run (any number of ranks) merges
them into the shared cache first (:func:`merge_rank_files`), so nothing answered is asked again. The ranks
only coordinate small Python objects, so the process group is gloo on any hardware; the models themselves
stay where each rank put them (``cuda:<LOCAL_RANK>`` for ``device: auto``).

Without ``torchrun`` (or with one process) no process group is created and the runner works as before on the
shared cache alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from .cache import AnswerCache, prepare_cache, remove_cache, set_aside

T = TypeVar("T")
RANK_FILE = re.compile(r"\.rank\d+$")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the evaluation: ``rank`` of ``world`` (0 of 1 without torchrun); ``owned``: the
    process group was created here (and is destroyed by :meth:`close`)."""

    rank: int = 0
    world: int = 1
    owned: bool = False

    @classmethod
    def from_env(cls, timeout_s: float) -> Ranks:
        """Join the process group torchrun describes (gloo); a single process joins nothing.

        ``timeout_s`` bounds every wait for the other ranks, including rank 0's scoring of a large task.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        owned = not dist.is_initialized()
        if owned:
            dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), owned)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every ``world``-th item from position ``rank``."""
        return list(items[self.rank::self.world])

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (on every rank)."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


ONE_PROCESS = Ranks()


def rank_file(cache_path: Path, rank: int) -> Path:
    """Where ``rank`` keeps its answers: ``<cache>.rank<r>`` beside the shared cache."""
    return cache_path.with_name(f"{cache_path.name}.rank{rank}")


def rank_files(cache_path: Path) -> list[Path]:
    """The rank files beside the shared cache (left by a killed run), not SQLite's ``-wal``/``-shm`` beside them."""
    prefix = f"{cache_path.name}.rank"
    return sorted(path for path in cache_path.parent.glob(f"{prefix}*") if RANK_FILE.search(path.name))


def merge_rank_files(cache: AnswerCache) -> int:
    """Merge every rank file beside ``cache`` into it and delete it; how many answers were merged."""
    merged = 0
    for path in rank_files(cache.path):
        merged += cache.merge(path)
        remove_cache(path)
    return merged


def prepare_shared(cache_path: Path, *, rebuild: bool, ranks: Ranks) -> int:
    """Rank 0 checks the shared cache (``rebuild``: sets it and any rank files aside) and merges a killed run's
    rank files into it, while the other ranks wait; how many answers were merged."""
    merged = 0
    if ranks.is_main:
        prepare_cache(cache_path, rebuild=rebuild)
        if rebuild:
            for path in rank_files(cache_path):
                set_aside(path)
        shared = AnswerCache(cache_path, "")
        try:
            merged = merge_rank_files(shared)
        finally:
            shared.close()
    ranks.barrier()
    return merged


class RankCache:
    """One rank's view of the answers: lookups in the shared cache, then in its own file; writes to its own.

    With one process there is no own file and everything goes to the shared cache, as before.
    """

    def __init__(self, shared: AnswerCache, own: AnswerCache | None = None):
        self.shared, self.own = shared, own

    @classmethod
    def open(cls, cache_path: Path, fingerprint: str, ranks: Ranks) -> RankCache:
        """The shared cache and, with several ranks, this rank's fresh file (after leftovers were merged)."""
        shared = AnswerCache(cache_path, fingerprint)
        own = AnswerCache(prepare_cache(rank_file(cache_path, ranks.rank)), fingerprint) if ranks.world > 1 else None
        return cls(shared, own)

    def get_many(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Any]:
        found = self.shared.get_many(keys)
        if self.own is not None:
            found.update(self.own.get_many([key for key in keys if key not in found]))
        return found

    def put_many(self, items: Any) -> None:
        (self.own or self.shared).put_many(items)

    def share(self, answers: dict[tuple[str, str, str], Any]) -> None:
        """Rank 0: every rank's answers of a task into the shared cache (one process wrote them there already)."""
        if self.own is not None:
            self.shared.put_many(answers.items())

    def close(self, *, discard_own: bool) -> None:
        """Close both files; ``discard_own`` deletes this rank's file (its answers are in the shared cache)."""
        self.shared.close()
        if self.own is not None:
            self.own.close()
            if discard_own:
                remove_cache(self.own.path)
