"""``gpt4roi leaderboard results=<dir> [reference=true] [holm=true] [focus=<model>] [output_dir=...]``.

Reads every ``<results>/<model>/<task>.json`` the runner wrote and renders one table of models x task
metrics with 95% bootstrap intervals: markdown (terminal and ``leaderboard.md``), ``leaderboard.csv`` and a
self-contained ``leaderboard.html`` opening with a plot per task (:mod:`evaluators.report_html`). For every
pair of models evaluated on the same rows of a task (same task fingerprint, shared row ids) it gives a paired
bootstrap p-value of the difference of the task's primary metric, recomputed on joint resamples of images,
and for accuracies an exact McNemar p-value; ``holm=true`` adds Holm-adjusted p-values across all pairs.
``focus=<model>`` prints only the pairs involving that model (the files keep every pair) and highlights it in
the plots. ``reference=true`` adds the published numbers of ``evaluators/reported.yaml`` as a separate table
marked "reported": they come from other data and code, so they are never put in the measured table nor
tested against it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .board import (
    Board,
    answer_rows,
    build_board,
    citations,
    measured_rows,
    pair_rows,
    reported_rows,
    task_rows,
)
from .report_html import render_html

REPORTED_FILE = Path(__file__).resolve().parent / "reported.yaml"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


def markdown(board: Board, *, focus_only: bool = False) -> str:
    """The board as markdown; ``focus_only`` keeps the paired tests involving the focus model (the terminal)."""
    parts = ["## Measured (95% bootstrap intervals)", "", markdown_table(*measured_rows(board)), "",
             "## Tasks", "", markdown_table(*task_rows(board))]
    header, answers = answer_rows(board)
    if answers:
        parts += ["", "## Box answers (read in each model's declared convention; unparsable and out of range score 0)",
                  "", markdown_table(header, answers)]
    pairs = board.focus_pairs() if focus_only else board.pairs
    if pairs:
        title = "## Paired bootstrap tests (same rows; metric recomputed on joint resamples of images)"
        if focus_only and board.focus is not None:
            title += f", pairs with {board.focus} (all pairs in leaderboard.md)"
        parts += ["", title, "", markdown_table(*pair_rows(board, pairs))]
    if board.reported:
        parts += ["", "## Reported (published numbers, not measured here; other data and code)", "",
                  markdown_table(*reported_rows(board)), "", *(f"- {c}" for c in citations(board))]
    return "\n".join(parts) + "\n"


def csv_text(board: Board) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["kind", "model", "task", "metric", "value", "ci_low", "ci_high", "n", "set", "source"])
    for entry in sorted(board.entries, key=lambda e: (e.model, e.task)):
        for metric, value in entry.data["metrics"].items():
            low, high = entry.data["ci95"].get(metric, ["", ""])
            writer.writerow(["measured", entry.model, entry.task, metric, value, low, high, entry.data["n"],
                             entry.data.get("task_info", {}).get("split", ""), ""])
    for row in board.reported:
        writer.writerow(["reported", row["model"], row["task"], row["metric"], row["value"], "", "", "", row["set"],
                         f"{row['source']} ({row['citation']})"])
    return buffer.getvalue()


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi leaderboard``; writes leaderboard.{md,csv,html} and prints the markdown."""
    results = Path(cfg.results)
    out = Path(cfg.output_dir) if cfg.get("output_dir") else results / "leaderboard"
    board = build_board(results, reference=bool(cfg.reference),
                        reported_file=Path(cfg.reported_file) if cfg.get("reported_file") else REPORTED_FILE,
                        hide_metrics=list(cfg.hide_metrics), resamples=int(cfg.bootstrap.resamples),
                        seed=int(cfg.bootstrap.seed), holm_correction=bool(cfg.get("holm", False)),
                        focus=cfg.get("focus"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(markdown(board))
    (out / "leaderboard.csv").write_text(csv_text(board))
    (out / "leaderboard.html").write_text(render_html(board))
    print(markdown(board, focus_only=True))
    print(f"written: {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {out / 'leaderboard.html'}")
    return 0
