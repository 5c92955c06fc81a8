"""The leaderboard's contents: every results file of a run, the paired tests, the published numbers, and
the rows of each table.

Shared by the two renderings of one board, :mod:`evaluators.leaderboard` (markdown and CSV, the command) and
:mod:`evaluators.report_html` (the HTML page), so that both show the same rows.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .metrics.bootstrap import paired_bootstrap_pvalue

DASH = "–"


@dataclass
class Entry:
    """One results file."""

    model: str
    task: str
    data: dict[str, Any]
    folder: Path

    def scores(self, metric: str) -> dict[str, float]:
        """Per-row scores of ``metric`` by row id, from the predictions file."""
        path = self.folder / self.data.get("predictions", f"{self.task}.predictions.jsonl")
        out = {}
        with path.open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    out[record["id"]] = float(record["scores"][metric])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{path}:{number}: expected a JSON object with id and scores.{metric} "
                                     f"({exc})") from exc
        return out


@dataclass
class Board:
    """One leaderboard: the results files, their (task, metric) columns, the tasks, the tests, the reported."""

    entries: list[Entry]
    columns: list[tuple[str, str]]  # (task, metric)
    tasks: dict[str, dict[str, Any]]  # task -> task_info + n
    pairs: list[dict[str, Any]] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted({e.model for e in self.entries})

    def entry(self, model: str, task: str) -> Entry | None:
        return next((e for e in self.entries if e.model == model and e.task == task), None)


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


def paired_tests(entries: list[Entry], resamples: int, seed: int) -> list[dict[str, Any]]:
    """Paired bootstrap p-values of the primary metric for model pairs on the same rows of a task."""
    out = []
    by_task: dict[str, list[Entry]] = {}
    for entry in entries:
        by_task.setdefault(entry.task, []).append(entry)
    for task, group in sorted(by_task.items()):
        for a, b in itertools.combinations(sorted(group, key=lambda e: e.model), 2):
            if a.data.get("task_fingerprint") != b.data.get("task_fingerprint"):
                continue  # different data or prompt: not the same rows
            metric = primary_metric(a)
            if metric not in b.data["metrics"]:
                continue
            sa, sb = a.scores(metric), b.scores(metric)
            shared = sorted(set(sa) & set(sb))
            if not shared:
                continue
            xa, xb = [sa[i] for i in shared], [sb[i] for i in shared]
            out.append({"task": task, "metric": metric, "model_a": a.model, "model_b": b.model, "n": len(shared),
                        "mean_a": sum(xa) / len(xa), "mean_b": sum(xb) / len(xb),
                        "p_value": paired_bootstrap_pvalue(xa, xb, resamples=resamples, seed=seed)})
    return out


def load_reported(path: Path) -> list[dict[str, Any]]:
    """Reported rows with their citation text resolved; a malformed file is an error naming the entry."""
    data = yaml.safe_load(path.read_text())
    known = data.get("citations", {})
    rows = []
    for number, item in enumerate(data.get("entries", []), start=1):
        missing = [k for k in ("model", "task", "set", "metrics", "source") if k not in item]
        if missing or item["source"] not in known:
            raise ValueError(f"{path}: entry {number} needs model, task, set, metrics and a source listed under "
                             f"citations (missing {missing or [item['source']]})")
        citation = known[item["source"]]
        for metric, value in item["metrics"].items():
            rows.append({"model": item["model"], "task": item["task"], "set": item["set"], "metric": metric,
                         "value": float(value), "source": f"{citation['short']} {item.get('table', '')}".strip(),
                         "citation": citation["full"]})
    return rows


def build_board(results: Path, *, reference: bool, reported_file: Path, hide_metrics: list[str],
                resamples: int, seed: int) -> Board:
    entries = collect(results, hide_metrics)
    columns: list[tuple[str, str]] = []
    tasks: dict[str, dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: e.task):
        info = {**entry.data.get("task_info", {}), "n": entry.data["n"]}
        tasks.setdefault(entry.task, info)
        for metric in entry.data["metrics"]:
            if (entry.task, metric) not in columns:
                columns.append((entry.task, metric))
    board = Board(entries, columns, tasks, paired_tests(entries, resamples, seed))
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
    header = ["task", "split", "n", "mode", "prompt", "metric implementation", "dataset"]
    rows = [[task, str(info.get("split", "")), str(info.get("n", "")), str(info.get("mode", "")),
             str(info.get("prompt", "")).replace("\n", " ⏎ "), str(info.get("metric", "")),
             str(info.get("dataset", ""))] for task, info in sorted(board.tasks.items())]
    return header, rows


def pair_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    header = ["task", "metric", "model A", "model B", "n", "A (item mean)", "B (item mean)", "A - B",
              "paired bootstrap p"]
    rows = [[p["task"], p["metric"], p["model_a"], p["model_b"], str(p["n"]), f"{p['mean_a']:.1f}",
             f"{p['mean_b']:.1f}", f"{p['mean_a'] - p['mean_b']:+.1f}", f"{p['p_value']:.3f}"] for p in board.pairs]
    return header, rows


def reported_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    header = ["reported model", "task", "set", "metric", "value", "source"]
    rows = [[r["model"], r["task"], r["set"], r["metric"], str(r["value"]), r["source"]] for r in board.reported]
    return header, rows


def citations(board: Board) -> list[str]:
    """The full references of the reported rows, in first-use order."""
    return list(dict.fromkeys(f"{r['source'].split(' Table')[0]}: {r['citation']}" for r in board.reported))
