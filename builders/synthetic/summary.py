"""The table printed after a world is written (by ``gpt4roi synth`` and the demo): each release's contents."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def summary_table(summary: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per release of :func:`builders.synthetic.synthesize`'s summary: its counts and seconds."""
    table = Table(title=title)
    table.add_column("release")
    table.add_column("contents")
    table.add_column("seconds", justify="right")
    for name, counts in summary.items():
        contents = ", ".join(f"{key} {value:,}" for key, value in counts.items() if key != "seconds")
        table.add_row(name, contents, f"{counts['seconds']:.1f}")
    return table
