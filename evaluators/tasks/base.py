"""What every task shares: reading and filtering its rows, jobs for the runner, and the scored result.

A task turns rows into :class:`Job` objects (a request plus the cache scope and generation settings it is
answered under), and turns the answers back into a :class:`TaskResult`: metrics on the papers' scale, the
per-item scores and statistics behind them and the image of each item (for bootstrap intervals and paired
tests that recompute the metric on resamples of images), and one record per row for the predictions file. The task config (``conf/eval/task/<name>.yaml``) names the prompt, the split, the metric
implementation and the dataset; :meth:`Task.describe` hands them to results files and the leaderboard.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from ..data import load_rows
from ..metrics.bootstrap import Statistic, interval, resampling
from ..metrics.corpus import statistic
from ..protocol import Request, digest

MODES = ("generate", "loglikelihood")
JobKey = tuple[str, str, str]


@dataclass(frozen=True)
class Job:
    """One request as the runner schedules and caches it: ``(scope, request key, settings)`` is the key."""

    scope: str
    mode: str
    settings: str
    request: Request

    @property
    def key(self) -> JobKey:
        return (self.scope, self.request.key, self.settings)


@dataclass
class TaskResult:
    """Metrics (x100), their per-item scores in ``item_ids`` order, and per-row prediction records.

    ``stats`` holds the per-item statistics of corpus metrics (:mod:`evaluators.metrics.corpus`), ``clusters``
    the image of each item; by default the records' ``image_id``, and when a record has none, items are
    resampled one by one.
    """

    metrics: dict[str, float]
    per_item: dict[str, list[float]]
    item_ids: list[str]
    records: list[dict[str, Any]]
    corpus_level: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, list[Any]] = field(default_factory=dict)
    clusters: list[str] | None = None

    def __post_init__(self) -> None:
        if self.clusters is None and self.records and all("image_id" in r for r in self.records):
            self.clusters = [str(r["image_id"]) for r in self.records]

    def statistic(self, name: str) -> Statistic:
        return statistic(name, self.per_item[name], self.stats, where=f"metric {name}")

    def intervals(self, resamples: int, seed: int) -> dict[str, list[float]]:
        """95% bootstrap interval per metric, the metric recomputed on every resample of images."""
        draws = resampling(len(self.item_ids), self.clusters, resamples=resamples, seed=seed)
        return {name: list(interval(self.statistic(name), draws)) for name in self.per_item}

    def prediction_lines(self) -> list[dict[str, Any]]:
        """One line per item for ``<task>.predictions.jsonl``: its record, id, scores, statistics and image
        (what the leaderboard's paired tests recompute the metrics from)."""
        lines = []
        for index, (item_id, record) in enumerate(zip(self.item_ids, self.records, strict=True)):
            line = {**record, "id": item_id, "scores": {name: values[index] for name, values in self.per_item.items()}}
            if self.stats:
                line["stats"] = {name: values[index] for name, values in self.stats.items()}
            if self.clusters is not None:
                line["image_id"] = self.clusters[index]
            lines.append(line)
        return lines


def settings_json(mode: str, generation: Mapping[str, Any]) -> str:
    """Canonical JSON of how a request is answered; part of the cache key."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    payload = {"mode": mode, **({k: generation[k] for k in sorted(generation)} if mode == "generate" else {})}
    return json.dumps(payload, sort_keys=True, default=list)


class Task(ABC):
    """A task built from its config; subclasses implement :meth:`build_items`-style logic via the hooks below."""

    kind: ClassVar[str] = ""
    metric_impl: ClassVar[str] = ""

    def __init__(self, name: str, cfg: Mapping[str, Any], data_root: str | Path | None = None,
                 limit: int | None = None):
        self.name = name
        self.cfg = dict(cfg)
        self.data_root = data_root
        self.limit = limit
        self.skipped: Counter[str] = Counter()
        self.mode = self.cfg.get("mode", "generate")
        self.generation = dict(self.cfg.get("generation") or {})
        self.settings = settings_json(self.mode, self.generation)

    def choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        """The config's ``key`` (``default`` when absent), refused with the task's name unless it is ``allowed``."""
        value = self.cfg.get(key, default)
        if value not in allowed:
            raise ValueError(f"task {self.name}: {key} must be one of {list(allowed)}, got {value!r}")
        return value

    # --- data -------------------------------------------------------------------------------------------
    @cached_property
    def _loaded(self) -> tuple[list[dict[str, Any]], str]:
        return self.load()

    def load(self) -> tuple[list[dict[str, Any]], str]:
        """Rows of the configured split passing the config's ``filter`` (and the dataset fingerprint)."""
        dataset = dict(self.cfg["dataset"])
        rows, fingerprint = load_rows(dataset, self.data_root)
        wanted = {key: value for key, value in (dataset.get("filter") or {}).items() if value not in (None, "")}
        kept = [row for row in rows if all(_matches(row.get(key), value) for key, value in wanted.items())]
        if not kept:
            raise ValueError(f"task {self.name}: no row of {dataset.get('path') or dataset.get('hub')} "
                             f"split {dataset['split']!r} matches filter {wanted}")
        return kept, fingerprint

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self._loaded[0]

    @property
    def dataset_fingerprint(self) -> str:
        return self._loaded[1]

    @cached_property
    def fingerprint(self) -> str:
        """Changes with the task's kind, prompt, scoring settings or data (not with display-only keys)."""
        relevant = {k: v for k, v in self.cfg.items() if k not in ("description", "generation", "mode")}
        return digest(self.kind, relevant, self.dataset_fingerprint)

    # --- hooks --------------------------------------------------------------------------------------------
    def bind_model(self, model: Any) -> None:  # noqa: B027 - a hook most tasks leave as is
        """Called by the runner before :meth:`jobs` with the model that will answer (grounding tasks read its
        declared coordinate convention); most tasks need nothing from it."""

    @abstractmethod
    def jobs(self) -> list[Job]:
        """Every request of the task (at most ``limit`` items)."""

    @abstractmethod
    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        """Metrics from the answers of :meth:`jobs` (a mapping from job key to answer)."""

    def describe(self) -> dict[str, Any]:
        """What the leaderboard prints about the task: prompt, split, metric implementation, data."""
        dataset = self.cfg["dataset"]
        return {"task": self.name, "kind": self.kind, "description": self.cfg.get("description", ""),
                "prompt": self.cfg.get("prompt", ""), "split": dataset["split"],
                "dataset": dataset.get("hub") or dataset.get("path") or dataset.get("annotation"), "filter": dict(dataset.get("filter") or {}),
                "metric": self.metric_impl, "mode": self.mode, "generation": self.generation,
                "primary_metric": self.cfg.get("primary_metric"), "protocol": self.cfg.get("protocol", "ours")}

    # --- helpers ------------------------------------------------------------------------------------------
    def limited(self, items: Sequence[Any]) -> list[Any]:
        return list(items if self.limit is None else items[: int(self.limit)])

    def job(self, request: Request) -> Job:
        return Job(scope=self.fingerprint, mode=self.mode, settings=self.settings, request=request)


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return value in wanted
    return value == wanted
