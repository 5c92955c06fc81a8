"""The leaderboard as one self-contained HTML page: the tables and one bar plot (PNG, inlined) per task.

Plots show measured models only, one bar per model and metric with its 95% bootstrap interval; published
numbers stay in their own table (see :mod:`evaluators.leaderboard`).
"""

from __future__ import annotations

import base64
import html
import io

from .board import Board, citations, measured_rows, pair_rows, reported_rows, task_rows

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
.reported { background: #fff8e6; }
figure { display: inline-block; margin: 0.5em; }
"""


def html_table(header: list[str], rows: list[list[str]], caption: str, css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{css_class}"' if css_class else ""
    return f"<table{klass}><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def task_plot(board: Board, task: str) -> str:
    """A base64 PNG bar plot of every measured model on ``task`` (metrics side by side, CI whiskers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [metric for t, metric in board.columns if t == task]
    models = [m for m in board.models if board.entry(m, task) is not None]
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(metrics) + 2), 3.2), dpi=100)
    for k, model in enumerate(models):
        entry = board.entry(model, task)
        values = [entry.data["metrics"].get(m, 0.0) for m in metrics]
        # clamped: a corpus-level metric's bootstrap interval need not contain its value (matplotlib refuses)
        lows = [max(0.0, v - entry.data["ci95"].get(m, [v, v])[0]) for v, m in zip(values, metrics, strict=True)]
        highs = [max(0.0, entry.data["ci95"].get(m, [v, v])[1] - v) for v, m in zip(values, metrics, strict=True)]
        positions = [i + (k - (len(models) - 1) / 2) * width for i in range(len(metrics))]
        ax.bar(positions, values, width, yerr=[lows, highs], capsize=3, label=model)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_title(f"{task} (n={board.tasks[task].get('n')}, 95% CI)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def render_html(board: Board) -> str:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Region-task leaderboard</title>",
             f"<style>{STYLE}</style></head><body><h1>Region-task leaderboard</h1>",
             html_table(*measured_rows(board), caption="Measured: value [95% bootstrap interval]"),
             html_table(*task_rows(board), caption="Tasks: split, prompt and metric implementation")]
    if board.pairs:
        parts.append(html_table(*pair_rows(board), caption="Paired bootstrap tests (models on the same rows)"))
    if board.reported:
        parts.append(html_table(*reported_rows(board), caption="Reported: published numbers, not measured here",
                                css_class="reported"))
        parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in citations(board)) + "</ul>")
    parts.append("<h2>Per task</h2>")
    for task in sorted(board.tasks):
        png = task_plot(board, task)
        parts.append(f"<figure><img alt='{html.escape(task)}' src='data:image/png;base64,{png}'>"
                     f"<figcaption>{html.escape(task)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
