"""The leaderboard as one self-contained HTML page: one plot (PNG, inlined) per task, then the tables.

A plot shows every measured model's score on the task's primary metric with its 95% bootstrap interval, the
``focus`` model highlighted, so the page answers "where does my model stand" before the tables; published
numbers stay in their own table (see :mod:`evaluators.leaderboard`).
"""

from __future__ import annotations

import base64
import html
import io

from .board import (
    Board,
    answer_rows,
    citations,
    measured_rows,
    pair_rows,
    primary_metric,
    reported_rows,
    task_rows,
)

FOCUS_COLOUR, OTHER_COLOUR = "#d62728", "#9fb7d4"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
.reported { background: #fff8e6; }
figure { display: inline-block; margin: 0.5em; max-width: 620px; vertical-align: top; }
"""


def html_table(header: list[str], rows: list[list[str]], caption: str, css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{css_class}"' if css_class else ""
    return f"<table{klass}><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def task_plot(board: Board, task: str) -> str:
    """A base64 PNG of every measured model's primary metric on ``task`` with its 95% interval, best on top,
    the focus model highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted((e for e in board.entries if e.task == task), key=lambda e: e.data["metrics"][primary_metric(e)])
    fig, ax = plt.subplots(figsize=(6.0, 0.9 + 0.35 * len(entries)), dpi=100)
    for row, entry in enumerate(entries):
        metric = primary_metric(entry)
        score = entry.data["metrics"][metric]
        low, high = entry.data["ci95"].get(metric, [score, score])
        focused = entry.model == board.focus
        colour = FOCUS_COLOUR if focused else OTHER_COLOUR
        ax.barh(row, score, color=colour, height=0.6)
        ax.errorbar(score, row, xerr=[[max(0.0, score - low)], [max(0.0, high - score)]], fmt="none", ecolor="#333",
                    capsize=3)
    ax.set_yticks(range(len(entries)), [e.model for e in entries])
    for label, entry in zip(ax.get_yticklabels(), entries, strict=True):
        label.set_fontweight("bold" if entry.model == board.focus else "normal")
    metric = primary_metric(entries[-1]) if entries else ""
    ax.set_xlabel(f"{metric} (95% bootstrap interval)")
    ax.set_title(task)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def render_html(board: Board) -> str:
    """The page: one plot per task first (the focus model highlighted), then the tables (every pair)."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Region-task leaderboard</title>",
             f"<style>{STYLE}</style></head><body><h1>Region-task leaderboard</h1>"]
    if board.focus is not None:
        parts.append(f"<p>Focus: <strong>{html.escape(board.focus)}</strong> (highlighted)</p>")
    for task in sorted(board.tasks):
        png = task_plot(board, task)
        parts.append(f"<figure><img alt='{html.escape(task)}' src='data:image/png;base64,{png}'>"
                     f"<figcaption>{html.escape(task)}: {html.escape(board.tasks[task].get('resampling', ''))}"
                     "</figcaption></figure>")
    parts += [html_table(*measured_rows(board), caption="Measured: value [95% bootstrap interval]"),
              html_table(*task_rows(board), caption="Tasks: split, prompt, metric implementation and resampling")]
    header, answers = answer_rows(board)
    if answers:
        parts.append(html_table(header, answers, caption="Box answers: unparsable and out-of-range answers score 0"))
    if board.pairs:
        parts.append(html_table(*pair_rows(board), caption="Paired tests (models on the same rows; metric "
                                                            "recomputed on joint resamples of images)"))
    if board.reported:
        parts.append(html_table(*reported_rows(board), caption="Reported: published numbers, not measured here",
                                css_class="reported"))
        parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in citations(board)) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
