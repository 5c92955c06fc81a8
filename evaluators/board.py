"""The leaderboard's contents: every results file of a run, the paired tests, the published numbers, and
the rows of each table.

Shared by the two renderings of one board, :mod:`evaluators.leaderboard` (markdown and CSV, the command) and
:mod:`evaluators.report_html` (the HTML page), so that both show the same rows. Paired tests read each model's
predictions file (per-item scores, corpus statistics and images) and recompute the task's primary metric for
both models on joint resamples of images (:mod:`evaluators.metrics.bootstrap`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .metrics.bootstrap import Statistic, corpus_value, holm, mcnemar_exact, paired_pvalue, resampling
from .metrics.corpus import FIXED_DOCUMENT_FREQUENCIES, RECOMPUTED, statistic

DASH = "–"
BINARY_SCORES = {0.0, 100.0}  # per-item scores of an accuracy-like metric: McNemar applies


@dataclass
class Entry:
    """One results file."""

    model: str
    task: str
    data: dict[str, Any]
    folder: Path

    @property
    def predictions_path(self) -> Path:
        return self.folder / self.data.get("predictions", f"{self.task}.predictions.jsonl")

    @cached_property
    def items(self) -> dict[str, dict[str, Any]]:
        """Lines of the predictions file by item id (``scores``, ``stats``, ``image``: the line's ``image_id``)."""
        out = {}
        with self.predictions_path.open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    out[str(record["id"])] = {"scores": dict(record["scores"]), "stats": record.get("stats", {}),
                                              "image": record.get("image_id")}
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{self.predictions_path}:{number}: expected a JSON object with id and scores "
                                     f"({exc})") from exc
        return out

    def statistic_on(self, metric: str, ids: list[str]) -> tuple[Statistic, list[float]]:
        """``metric`` as a recomputable statistic of the items ``ids`` (in that order), and their scores.
        A corpus metric missing its statistics on any line is an error naming the file."""
        try:
            scores = [float(self.items[i]["scores"][metric]) for i in ids]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.predictions_path}: expected scores.{metric} on every line ({exc})") from exc
        needed = RECOMPUTED.get(metric)
        values = [self.items[i]["stats"].get(needed) for i in ids] if needed else []
        stats = {needed: values} if needed and all(v is not None for v in values) else {}
        return statistic(metric, scores, stats, where=str(self.predictions_path)), scores

    def images(self, ids: list[str]) -> list[str] | None:
        """The image of each item, or ``None`` when the file does not record them all (resampled by item)."""
        images = [self.items[i]["image"] for i in ids]
        return None if any(image is None for image in images) else [str(image) for image in images]


@dataclass
class Board:
    """One leaderboard: the results files, their (task, metric) columns, the tasks, the tests, the reported."""

    entries: list[Entry]
    columns: list[tuple[str, str]]  # (task, metric)
    tasks: dict[str, dict[str, Any]]  # task -> task_info + n + images
    pairs: list[dict[str, Any]] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)
    holm: bool = False
    focus: str | None = None

    @property
    def models(self) -> list[str]:
        return sorted({e.model for e in self.entries})

    def entry(self, model: str, task: str) -> Entry | None:
        return next((e for e in self.entries if e.model == model and e.task == task), None)

    def focus_pairs(self) -> list[dict[str, Any]]:
        """The pairs that involve the focus model (all pairs without one)."""
        if self.focus is None:
            return self.pairs
        return [p for p in self.pairs if self.focus in (p["model_a"], p["model_b"])]


def collect(results: Path, hide_metrics: list[str]) -> list[Entry]:
    """Every results file under ``results/<model>/``; files that are not results are ignored."""
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} does not exist (run `gpt4roi eval` first)")
    entries = []
    for path in sorted(results.glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON results file ({exc})") from exc
        if not isinstance(data, dict) or not {"model", "task", "metrics", "ci95"} <= set(data):
            continue
        data["metrics"] = {k: v for k, v in data["metrics"].items() if k not in hide_metrics}
        entries.append(Entry(data["model"], data["task"], data, path.parent))
    if not entries:
        raise FileNotFoundError(f"no results files (<model>/<task>.json) under {results}")
    return entries


def primary_metric(entry: Entry) -> str:
    wanted = entry.data.get("task_info", {}).get("primary_metric")
    return wanted if wanted in entry.data["metrics"] else next(iter(entry.data["metrics"]))


def paired_test(a: Entry, b: Entry, metric: str, resamples: int, seed: int) -> dict[str, Any] | None:
    """The paired test of ``metric`` between two models on their shared items, or ``None`` if they share none."""
    shared = sorted(set(a.items) & set(b.items))
    if not shared:
        return None
    (stat_a, xa), (stat_b, xb) = a.statistic_on(metric, shared), b.statistic_on(metric, shared)
    images = a.images(shared)
    draws = resampling(len(shared), images, resamples=resamples, seed=seed)
    binary = set(xa) | set(xb) <= BINARY_SCORES
    return {"task": a.task, "metric": metric, "model_a": a.model, "model_b": b.model, "n": len(shared),
            "images": None if images is None else draws.n_clusters, "value_a": corpus_value(stat_a),
            "value_b": corpus_value(stat_b), "p_value": paired_pvalue(stat_a, stat_b, draws),
            "mcnemar_p": mcnemar_exact([x > 0 for x in xa], [x > 0 for x in xb]) if binary else None}


def paired_tests(entries: list[Entry], resamples: int, seed: int, *, holm_correction: bool = False
                 ) -> list[dict[str, Any]]:
    """Paired tests of the primary metric for model pairs on the same rows of a task; with ``holm_correction``
    Holm-adjusted p-values across all pairs of the board (bootstrap and McNemar each their own family)."""
    out = []
    by_task: dict[str, list[Entry]] = {}
    for entry in entries:
        by_task.setdefault(entry.task, []).append(entry)
    for _, group in sorted(by_task.items()):
        for a, b in itertools.combinations(sorted(group, key=lambda e: e.model), 2):
            if a.data.get("task_fingerprint") != b.data.get("task_fingerprint"):
                continue  # different data or prompt: not the same rows
            metric = primary_metric(a)
            if metric in b.data["metrics"] and (pair := paired_test(a, b, metric, resamples, seed)) is not None:
                out.append(pair)
    if holm_correction:
        for key in ("p_value", "mcnemar_p"):
            tested = [p for p in out if p[key] is not None]
            for pair, adjusted in zip(tested, holm([p[key] for p in tested]), strict=True):
                pair[f"{key}_holm"] = adjusted
    return out


def resampling_note(entry: Entry) -> str:
    """How the task's intervals were resampled: by image (counts) or by item, and which metrics are recomputed."""
    images = entry.images(list(entry.items))
    unit = f"by image: {len(entry.items)} items, {len(set(images))} images" if images is not None else \
        f"by item: {len(entry.items)} items (no images recorded)"
    metrics = entry.data["metrics"]
    notes = [unit]
    recomputed = [m for m in metrics if m in RECOMPUTED]
    if recomputed:
        notes.append(f"{', '.join(recomputed)} recomputed from summed statistics per resample")
    fixed = [m for m in metrics if m in FIXED_DOCUMENT_FREQUENCIES]
    if fixed:
        notes.append(f"{', '.join(fixed)}: document frequencies of the full set, kept fixed")
    return "; ".join(notes)


def load_reported(path: Path) -> list[dict[str, Any]]:
    """Reported rows with their citation text resolved; a malformed file is an error naming the entry."""
    data = yaml.safe_load(path.read_text())
    known = data.get("citations", {})
    rows = []
    for number, item in enumerate(data.get("entries", []), start=1):
        missing = [k for k in ("model", "task", "protocol", "set", "metrics", "source") if k not in item]
        if missing or item["source"] not in known:
            raise ValueError(f"{path}: entry {number} needs model, task, protocol, set, metrics and a source listed "
                             f"under citations (missing {missing or [item['source']]})")
        citation = known[item["source"]]
        for metric, value in item["metrics"].items():
            rows.append({"model": item["model"], "task": item["task"], "protocol": item["protocol"],
                         "set": item["set"], "metric": metric,
                         "value": float(value), "source": f"{citation['short']} {item.get('table', '')}".strip(),
                         "citation": citation["full"]})
    return rows


def build_board(results: Path, *, reference: bool, reported_file: Path, hide_metrics: list[str],
                resamples: int, seed: int, holm_correction: bool = False, focus: str | None = None) -> Board:
    entries = collect(results, hide_metrics)
    if focus is not None and focus not in {e.model for e in entries}:
        raise ValueError(f"focus model {focus!r} has no results under {results}; models: "
                         f"{', '.join(sorted({e.model for e in entries}))}")
    columns: list[tuple[str, str]] = []
    tasks: dict[str, dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: e.task):
        if entry.task not in tasks:
            tasks[entry.task] = {**entry.data.get("task_info", {}), "n": entry.data["n"],
                                 "resampling": resampling_note(entry)}
        for metric in entry.data["metrics"]:
            if (entry.task, metric) not in columns:
                columns.append((entry.task, metric))
    board = Board(entries, columns, tasks, paired_tests(entries, resamples, seed, holm_correction=holm_correction),
                  holm=holm_correction, focus=focus)
    if reference:
        board.reported = load_reported(reported_file)
    return board


def cell(entry: Entry | None, metric: str) -> str:
    if entry is None or metric not in entry.data["metrics"]:
        return DASH
    low, high = entry.data["ci95"].get(metric, [float("nan")] * 2)
    return f"{entry.data['metrics'][metric]:.1f} [{low:.1f}, {high:.1f}]"


def measured_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    header = ["model", *(f"{task} {metric}" for task, metric in board.columns)]
    rows = [[model, *(cell(board.entry(model, task), metric) for task, metric in board.columns)]
            for model in board.models]
    return header, rows


def task_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    header = ["task", "protocol", "split", "n", "mode", "prompt", "metric implementation", "dataset",
              "bootstrap resampling"]
    rows = [[task, str(info.get("protocol", "")), str(info.get("split", "")), str(info.get("n", "")),
             str(info.get("mode", "")),
             str(info.get("prompt", "")).replace("\n", " ⏎ "), str(info.get("metric", "")),
             str(info.get("dataset", "")), str(info.get("resampling", ""))] for task, info in sorted(board.tasks.items())]
    return header, rows


def answer_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    """How each model's box answers were read (grounding tasks: the runner's ``extra.answers``): answers that
    were unparsable or out of the declared convention's range score 0, and the board says how many there were."""
    header = ["model", "task", "coordinates", "answers", "read", "unparsable", "out of range"]
    rows = []
    for entry in sorted(board.entries, key=lambda e: (e.task, e.model)):
        counts = entry.data.get("extra", {}).get("answers")
        if isinstance(counts, dict) and "unparsable" in counts:
            rows.append([entry.model, entry.task, str(entry.data["extra"].get("coordinates", "")),
                         str(sum(counts.values())), str(counts.get("ok", 0)), str(counts["unparsable"]),
                         str(counts.get("out_of_range", 0))])
    return header, rows


def _p(value: float | None) -> str:
    return DASH if value is None else f"{value:.3g}"


def pair_rows(board: Board, pairs: list[dict[str, Any]] | None = None) -> tuple[list[str], list[list[str]]]:
    """The paired tests (``pairs``: a subset, e.g. :meth:`Board.focus_pairs`; default all)."""
    header = ["task", "metric", "model A", "model B", "items", "images", "A", "B", "A - B", "paired bootstrap p",
              *(["p (Holm)"] if board.holm else []), "McNemar p", *(["McNemar p (Holm)"] if board.holm else [])]
    rows = []
    for p in board.pairs if pairs is None else pairs:
        row = [p["task"], p["metric"], p["model_a"], p["model_b"], str(p["n"]),
               DASH if p["images"] is None else str(p["images"]), f"{p['value_a']:.1f}", f"{p['value_b']:.1f}",
               f"{p['value_a'] - p['value_b']:+.1f}", _p(p["p_value"])]
        if board.holm:
            row.append(_p(p.get("p_value_holm")))
        row.append(_p(p["mcnemar_p"]))
        if board.holm:
            row.append(_p(p.get("mcnemar_p_holm")))
        rows.append(row)
    return header, rows


def reported_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    """Published rows; "beside" names the measured task a row stands next to: only a task of the same name
    measured under the same protocol (docs/protocols.md), never one whose numbers are computed another way."""
    header = ["reported model", "task", "protocol", "set", "metric", "value", "source", "beside"]
    rows = [[r["model"], r["task"], r["protocol"], r["set"], r["metric"], str(r["value"]), r["source"],
             r["task"] if board.tasks.get(r["task"], {}).get("protocol") == r["protocol"] else DASH]
            for r in board.reported]
    return header, rows


def citations(board: Board) -> list[str]:
    """The full references of the reported rows, in first-use order."""
    return list(dict.fromkeys(f"{r['source'].split(' Table')[0]}: {r['citation']}" for r in board.reported))
