"""The floors every model must beat, each named for what it knows.

Text-only floors see what a blind model sees (the question, the options, the training answers), never the
image, the region or its gold category:

* :class:`Chance`: a uniformly random choice (seeded per request); an empty caption.
* :class:`Prior`: the most frequent answer letter of the training split (per source and task); the most
  frequent training answer (caption, category name) for open questions.
* :class:`TextSimilarity`: all-MiniLM-L6-v2 sentence embeddings; the choice most similar to the question. An
  open question (a caption, a class name) is the same text for every item, so its best text-only answer is
  the prior's.

One floor knows more than a blind model, and says so in its name:

* :class:`CategoryOracle`: for captioning, the training caption most similar to the region's **gold category
  name** (among the ``max_train_captions`` most frequent ones). It is an upper reference for a model that
  recognises the object perfectly and knows nothing else; where the category is hidden (it is the answer, in
  referring object classification) it answers as :class:`TextSimilarity`.

Training answers are read from ``<train_root>/<source>`` (the built folder of the request row's source,
``train_split``) and indexed per (source, task). ``loglikelihood`` returns a score whose length-normalised
value (the runner divides by the continuation's length) ranks the options as ``generate`` would.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.data import load_rows, resolve_path, shard_paths, stat_digest
from evaluators.metrics.semantic import shared_encoder
from evaluators.protocol import EvalModel, Request, digest

UNCHOSEN = -1000.0  # log-probability stand-in of an option a floor does not pick


class Floor(EvalModel):
    """Shared parts: fingerprint, training answers, loglikelihood from a preferred choice."""

    uses_training = False

    def __init__(self, train_root: str | None = None, train_split: str = "train", seed: int = 0):
        self.train_root = train_root
        self.train_split = train_split
        self.seed = seed
        self._pools: dict[tuple[str, str], tuple[Counter[int], Counter[str]]] = {}

    @cached_property
    def fingerprint(self) -> str:
        """Class, settings and the training shards' names, sizes and times (a rebuild changes it)."""
        training = None
        if self.uses_training and self.train_root:
            root = Path(self.train_root)
            training = {folder.name: stat_digest(shard_paths(folder, self.train_split))
                        for folder in sorted(root.iterdir()) if folder.is_dir() and
                        any((folder / "data").glob(f"{self.train_split}-*.parquet"))} if root.is_dir() else None
        return digest(type(self).__name__, self.settings(), training)

    def settings(self) -> dict[str, Any]:
        """Every constructor setting that changes an answer (part of the fingerprint)."""
        return {"train_split": self.train_split, "seed": self.seed}

    # --- training answers ---------------------------------------------------------------------------------
    def pool(self, request: Request) -> tuple[Counter[int], Counter[str]]:
        """Label and answer counts of the training rows of the request's source and task."""
        source, task = str(request.row["source"]), request.task
        if (source, task) not in self._pools:
            if not self.train_root:
                raise ValueError(f"{type(self).__name__} needs train_root (built folders with a "
                                 f"{self.train_split!r} split) to answer {source}/{task}")
            rows, _ = load_rows({"path": source, "split": self.train_split}, resolve_path(self.train_root, None),
                                columns=["task", "label", "conversations"])
            same = [row for row in rows if row["task"] == task] or rows
            labels = Counter(int(row["label"]) for row in same if row["label"] >= 0)
            answers = Counter(turn["value"].strip() for row in same for turn in row["conversations"]
                              if turn["from"] == "gpt" and turn["value"].strip())
            self._pools[(source, task)] = (labels, answers)
        return self._pools[(source, task)]

    def prior_choice(self, request: Request) -> int:
        """Most frequent training label; for options without labels, the option most often given as answer."""
        labels, answers = self.pool(request)
        if labels:
            best = max(range(len(request.choices)), key=lambda k: (labels.get(k, 0), -k))
            return best
        return max(range(len(request.choices)), key=lambda k: (answers.get(request.choices[k], 0), -k))

    def prior_answer(self, request: Request) -> str:
        _, answers = self.pool(request)
        return answers.most_common(1)[0][0] if answers else ""

    # --- protocol -----------------------------------------------------------------------------------------
    def choose(self, request: Request) -> int:
        raise NotImplementedError

    def open_answer(self, request: Request) -> str:
        raise NotImplementedError

    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        return [request.answer_for(self.choose(request)) if request.choices else self.open_answer(request)
                for request in requests]

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        out = []
        for request in requests:
            if request.continuation not in request.choices:
                raise ValueError(f"{type(self).__name__} scores only multiple-choice continuations "
                                 f"(request {request.key})")
            chosen = self.choose(request) == request.choices.index(request.continuation)
            out.append(0.0 if chosen else UNCHOSEN)
        return out


class Chance(Floor):
    """Uniform over the choices (seeded by the request's row id, so a run is reproducible); empty captions."""

    def choose(self, request: Request) -> int:
        base = request.key.split("#option")[0]
        return random.Random(f"{self.seed}:{base}").randrange(len(request.choices))

    def open_answer(self, request: Request) -> str:
        return ""


class Prior(Floor):
    """The most frequent training answer."""

    uses_training = True

    def choose(self, request: Request) -> int:
        return self.prior_choice(request)

    def open_answer(self, request: Request) -> str:
        return self.prior_answer(request)


class TextSimilarity(Floor):
    """Nearest text in all-MiniLM-L6-v2's embedding space."""

    uses_training = True

    def __init__(self, train_root: str | None = None, train_split: str = "train", seed: int = 0):
        super().__init__(train_root, train_split, seed)
        self._batch: dict[str, np.ndarray] = {}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "encoder": "all-MiniLM-L6-v2", "open_answer": "prior"}

    @staticmethod
    def query(request: Request) -> str:
        """The text the options are compared with: the question (and, for QA->R, its answer)."""
        return " ".join(request.fields.get(k, "") for k in ("question", "answer")).strip()

    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        """As :class:`Floor`, with every question and option of the batch embedded in one call."""
        texts = sorted({t for r in requests if r.choices and self.query(r) for t in (self.query(r), *r.choices)})
        self._batch = dict(zip(texts, shared_encoder().encode(texts), strict=True)) if texts else {}
        try:
            return super().generate(requests, **gen_kwargs)
        finally:
            self._batch = {}

    def choose(self, request: Request) -> int:
        query = self.query(request)
        if not query:
            return self.prior_choice(request)
        embed = self._batch if all(t in self._batch for t in (query, *request.choices)) else dict(
            zip((query, *request.choices), shared_encoder().encode([query, *request.choices]), strict=True))
        similarity = [float(embed[choice] @ embed[query]) for choice in request.choices]
        return int(np.argmax(similarity))

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        texts = sorted({t for r in requests for t in (self.query(r), r.continuation)})
        embed = dict(zip(texts, shared_encoder().encode(texts), strict=True))
        # the runner divides by len(continuation): scale so that the normalised value is the cosine
        return [float(embed[self.query(r)] @ embed[r.continuation]) * max(len(r.continuation), 1) for r in requests]

    def open_answer(self, request: Request) -> str:
        """The question of an open task is the same for every item: a text-only model can do no better than
        the most frequent training answer."""
        return self.prior_answer(request)


class CategoryOracle(TextSimilarity):
    """:class:`TextSimilarity` that also reads the region's gold category name (``request.fields["category"]``,
    which captioning tasks fill when the category is not itself a reference): not a text-only floor."""

    def __init__(self, train_root: str | None = None, train_split: str = "train", seed: int = 0,
                 max_train_captions: int = 50_000):
        super().__init__(train_root, train_split, seed)
        self.max_train_captions = max_train_captions
        self._caption_index: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "max_train_captions": self.max_train_captions,
                "open_answer": "training caption nearest the gold category"}

    def open_answer(self, request: Request) -> str:
        category = request.fields.get("category", "")
        if not category:
            return self.prior_answer(request)
        captions, embeddings = self._captions(request)
        if not captions:
            return ""
        query = shared_encoder().encode([category])[0]
        return captions[int(np.argmax(embeddings @ query))]

    def _captions(self, request: Request) -> tuple[list[str], np.ndarray]:
        key = (str(request.row["source"]), request.task)
        if key not in self._caption_index:
            _, answers = self.pool(request)
            # the most frequent ones (ties by text): embedding millions of VG captions on a CPU takes hours
            ranked = sorted(answers.items(), key=lambda item: (-item[1], item[0]))[: self.max_train_captions]
            captions = sorted(text for text, _ in ranked)
            self._caption_index[key] = (captions, shared_encoder().encode(captions))
        return self._caption_index[key]
