"""The training data: corpus rows -> images -> model inputs, in a deterministic order split by rank.

Order. Each epoch's order is a permutation of the corpus seeded by ``(seed, epoch)`` (or the stream's own
order with ``streaming=true``). The order is cut into *global micro-batches* of ``per_device x world`` rows;
rank ``r`` takes the ``r``-th slice of each. Optimiser step ``t`` consumes global micro-batches
``t*accum ... t*accum + accum - 1``, so the data position is a function of the step alone: a resumed run and a
run with another world size (same global batch) see exactly the same rows at every step.

Workers. Images are decoded and rows encoded in DataLoader workers: worker ``w`` of ``W`` prepares the
micro-batches ``m`` with ``m % W == w`` and the DataLoader takes them round-robin, i.e. in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image

from builders.readers.vcr_text import LETTERS

from ..processing import load_image

Encode = Callable[[Mapping[str, Any], Image.Image], dict[str, Any]]
Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]
MC_TASKS = ("vcr_qa", "vcr_qar")
CORPUS_REPORT = "corpus_report.json"  # written by ``gpt4roi corpus`` (builders.corpus.assembler)


@dataclass(frozen=True)
class CorpusSpec:
    """Where the rows come from (``cfg.corpus``): a folder or Hub id, its config and split, and the images."""

    path: str
    name: str | None = None
    split: str = "train"
    streaming: bool = False
    tasks: tuple[str, ...] = ()
    image_root: str | Mapping[str, str] | None = None
    raw_root: str | None = None
    answer_format: str = "as_is"  # or "letter": multiple-choice rows answer with "(A)".."(D)"
    max_rows: int | None = None

    @classmethod
    def from_config(cls, corpus: Any) -> CorpusSpec:
        if not corpus.path:
            raise ValueError("corpus.path is empty (give corpus.path=<corpus folder or Hub id>)")
        if corpus.answer_format not in ("as_is", "letter"):
            raise ValueError(f"corpus.answer_format={corpus.answer_format!r} (expected 'as_is' or 'letter')")
        if corpus.max_rows is not None and int(corpus.max_rows) < 1:
            raise ValueError(f"corpus.max_rows={corpus.max_rows!r} is out of range (expected >= 1 or null)")
        root = corpus.image_root
        if root is not None and not isinstance(root, str):
            root = {str(k): str(v) for k, v in root.items()}
        return cls(path=str(corpus.path), name=corpus.name, split=str(corpus.split),
                   streaming=bool(corpus.streaming), tasks=tuple(corpus.tasks or ()), image_root=root,
                   raw_root=None if corpus.raw_root is None else str(corpus.raw_root),
                   answer_format=str(corpus.answer_format),
                   max_rows=None if corpus.max_rows is None else int(corpus.max_rows))

    def local_folder(self) -> Path | None:
        path = Path(self.path).expanduser()
        return path if path.is_dir() else None

    def image_roots(self) -> str | dict[str, str] | None:
        """``image_root`` when given; else, from ``raw_root``, each source's release folder.

        A corpus folder records its recipe in ``corpus_report.json`` (entry -> builder and ``raw`` folder
        under the raw root), so ``raw_root`` alone maps every source; for a single build, ``raw_root`` is
        that release's folder.
        """
        if self.image_root is not None or self.raw_root is None:
            return self.image_root
        folder = self.local_folder()
        report = folder / CORPUS_REPORT if folder is not None else None
        if report is None or not report.is_file():
            return self.raw_root
        roots: dict[str, str] = {}
        for entry, info in json.loads(report.read_text())["recipe"]["sources"].items():
            if not info.get("raw"):
                continue  # an entry made from an existing build: give its root in corpus.image_root
            root = str(Path(self.raw_root) / info["raw"])
            for source in {entry, info.get("builder", entry)}:
                if roots.setdefault(source, root) != root:
                    raise ValueError(f"{report}: source {source!r} has images under both {roots[source]} and "
                                     f"{root}; give corpus.image_root={{source: folder}} explicitly")
        return roots


def open_rows(spec: CorpusSpec) -> datasets.Dataset | datasets.IterableDataset:
    """The corpus split as a ``datasets`` (iterable) dataset with undecoded images, filtered to ``spec.tasks``.

    A local path that does not exist is an error naming it (rather than a Hub lookup of a typo).
    """
    looks_local = spec.path.startswith((".", "/", "~")) or Path(spec.path).expanduser().exists()
    if looks_local and spec.local_folder() is None:
        raise FileNotFoundError(f"corpus folder {spec.path} does not exist (build it with `gpt4roi corpus`)")
    try:
        rows = datasets.load_dataset(spec.path, spec.name, split=spec.split, streaming=spec.streaming)
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(f"cannot load corpus {spec.path!r} (config {spec.name!r}, split "
                                f"{spec.split!r}): {exc}") from exc
    rows = rows.cast_column("image", datasets.Image(decode=False))
    if spec.tasks:
        wanted = set(spec.tasks)
        rows = rows.filter(lambda task: task in wanted, input_columns="task")
    if spec.max_rows is not None:
        rows = rows.take(spec.max_rows) if spec.streaming else rows.select(range(min(spec.max_rows, len(rows))))
    return rows


def letter_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """A multiple-choice row whose last assistant turn is the correct letter, ``(A)`` .. ``(D)``.

    The letter answer is the protocol's (docs/protocols.md#question-to-answer).
    """
    row = dict(row)
    if row["task"] in MC_TASKS and row["choices"] and row["label"] >= 0:
        turns = [dict(turn) for turn in row["conversations"]]
        turns[-1]["value"] = f"({LETTERS[row['label']]})"
        row["conversations"] = turns
    return row


class ImageLoader:
    """Open a row's image (embedded bytes, or a path under the image root of the row's source).

    ``roots`` is one folder for every source, or ``{source: folder}`` with an optional ``"*"`` fallback:
    a corpus mixes sources whose paths are relative to different raw releases. Opening itself (safe path
    resolution, errors naming the row) is the processor's :func:`~gpt4roi.processing.load_image`.
    """

    def __init__(self, roots: str | Mapping[str, str] | None):
        self.roots = roots

    def root_for(self, source: str) -> str | None:
        if self.roots is None or isinstance(self.roots, str):
            return self.roots
        return self.roots.get(source, self.roots.get("*"))

    def __call__(self, row: Mapping[str, Any]) -> Image.Image:
        return load_image(row, self.root_for(row["source"]))


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The row order of ``epoch``: a permutation seeded by ``(seed, epoch)``, independent of the global RNG."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_rows, generator=generator).tolist()


@dataclass(frozen=True)
class Plan:
    """How rows map onto steps: global micro-batch size, micro-batches per step, steps per epoch and total."""

    micro_rows: int          # rows per global micro-batch (per_device x world)
    accum: int               # micro-batches per optimiser step
    steps_per_epoch: int
    total_steps: int

    @property
    def micro_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accum


class MicroBatches(torch.utils.data.IterableDataset):
    """This rank's micro-batches from optimiser step ``start_step`` to the end of the plan, encoded."""

    def __init__(self, rows: datasets.Dataset | datasets.IterableDataset, plan: Plan, *, rank: int,
                 per_device: int, seed: int, start_step: int, encode: Encode, collate: Collate,
                 images: ImageLoader, letter: bool):
        self.rows, self.plan, self.rank, self.per_device = rows, plan, rank, per_device
        self.seed, self.start_step = seed, start_step
        self.encode, self.collate, self.images, self.letter = encode, collate, images, letter

    def _global_micro_batches(self, start: int) -> Iterator[tuple[int, Callable[[], list[dict]]]]:
        """``(m, fetch)`` for every global micro-batch ``m >= start``; ``fetch()`` returns this rank's rows."""
        plan, end = self.plan, self.plan.total_steps * self.plan.accum
        lo, hi = self.rank * self.per_device, (self.rank + 1) * self.per_device
        if isinstance(self.rows, datasets.IterableDataset):
            yield from self._streamed(start, end, lo, hi)
            return
        m = start
        while m < end:
            epoch = m // plan.micro_per_epoch
            order = epoch_order(len(self.rows), self.seed, epoch)
            while m < min(end, (epoch + 1) * plan.micro_per_epoch):
                first = (m - epoch * plan.micro_per_epoch) * plan.micro_rows
                indices = order[first + lo:first + hi]
                yield m, (lambda chosen=indices: [self.rows[i] for i in chosen])
                m += 1

    def _streamed(self, start: int, end: int, lo: int, hi: int) -> Iterator[tuple[int, Callable[[], list[dict]]]]:
        """A stream's micro-batches: epoch after epoch of the (buffer-shuffled) stream, incomplete tails dropped.

        Its length is unknown, so reaching micro-batch ``start`` means reading (not decoding) the rows before it.
        """
        m, epoch = 0, 0
        while m < end:
            stream = self.rows.shuffle(seed=self.seed, buffer_size=1000)
            stream.set_epoch(epoch)
            batch: list[dict] = []
            produced = m
            for row in stream:
                batch.append(row)
                if len(batch) < self.plan.micro_rows:
                    continue
                if m >= start:
                    yield m, (lambda chunk=batch[lo:hi]: chunk)
                batch, m = [], m + 1
                if m >= end:
                    return
            if m == produced:
                raise ValueError(f"the corpus stream holds fewer rows than one global micro-batch "
                                 f"({self.plan.micro_rows})")
            epoch += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        start = self.start_step * self.plan.accum
        for m, fetch in self._global_micro_batches(start):
            if (m - start) % workers != worker:
                continue
            rows = [letter_answer(row) if self.letter else row for row in fetch()]
            try:
                batch = self.collate([self.encode(row, self.images(row)) for row in rows])
            except (OSError, ValueError) as exc:  # a one-argument type, so a worker's error reaches the CLI
                raise ValueError(f"{type(exc).__name__}: {exc}") from exc
            yield batch


def make_plan(num_rows: int | None, settings_epochs: int, max_steps: int, global_batch: int, micro_rows: int,
              accum: int) -> Plan:
    """The step plan of a corpus of ``num_rows`` rows (``None``: unknown length, needs ``max_steps``)."""
    if num_rows is None:
        if max_steps < 1:
            raise ValueError("a corpus of unknown length (streaming) needs trainer.max_steps")
        steps_per_epoch = max_steps  # nominal: a stream starts its next epoch when it runs out
    else:
        steps_per_epoch = num_rows // global_batch
        if steps_per_epoch < 1:
            raise ValueError(f"the corpus has {num_rows} rows, fewer than one global batch "
                             f"(trainer.global_batch_size={global_batch})")
    total = steps_per_epoch * settings_epochs if max_steps < 1 else max_steps
    return Plan(micro_rows=micro_rows, accum=accum, steps_per_epoch=steps_per_epoch, total_steps=total)


def num_rows(rows: datasets.Dataset | datasets.IterableDataset) -> int | None:
    """The number of rows, or ``None`` for a stream whose size the metadata does not give."""
    if isinstance(rows, datasets.Dataset):
        return len(rows)
    return None


def loader(stream: MicroBatches, num_workers: int, seed: int) -> torch.utils.data.DataLoader:
    """A DataLoader over ready-made micro-batches that never touches the global RNG (exact resume)."""
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, prefetch_factor=4 if num_workers else None,
    )
