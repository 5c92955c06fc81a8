"""``gpt4roi demo``: the suite end to end on the built-in synthetic world, as a sequence of steps.

Each step is a function of the shared :class:`DemoRun`; later stages of the suite (corpus, training,
evaluation, leaderboard) extend the demo by appending to :data:`STEPS`. A step that fails for one source
(e.g. one builder) records the failure and lets the others run; the command then exits non-zero.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class DemoRun:
    """What the steps share: the config, the work folder, the console, and each step's results."""

    cfg: Any
    work: Path
    console: Console
    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def world(self) -> Path:
        return self.work / "world"

    def built(self, source: str) -> Path:
        return self.work / "built" / source


def synthesise(run: DemoRun) -> None:
    """Write the synthetic world: one raw release per source, in its original format."""
    from builders.synthetic import synthesize
    from builders.synthetic.cli import print_summary

    summary = synthesize(run.world, run.cfg.scale, int(run.cfg.seed))
    run.results["world"] = summary
    print_summary(summary, f"synthetic world (scale={run.cfg.scale}, seed={run.cfg.seed}) -> {run.world}")


def build_sources(run: DemoRun) -> None:
    """Build every registered source from its synthetic raw root with the real builders."""
    from builders.build import build_source
    from builders.errors import BuildError
    from builders.sources import BUILDERS
    from builders.synthetic import SOURCE_OPTIONS, SOURCE_RELEASE

    table = Table(title="built sources (rows, regions and skips summed over splits)")
    for column in ("source", "splits", "rows", "regions", "skipped", "seconds"):
        table.add_column(column, justify="right" if column in ("rows", "regions", "skipped", "seconds") else "left")
    reports = {}
    for source in BUILDERS:
        started = time.perf_counter()
        try:
            report = build_source(source, run.world / SOURCE_RELEASE[source], run.built(source),
                                  seed=int(run.cfg.seed), options=SOURCE_OPTIONS.get(source), progress=False)
        except (BuildError, ImportError, OSError, ValueError) as exc:
            run.failures.append(f"build {source}: {exc}")
            table.add_row(source, f"[red]FAILED: {type(exc).__name__}: {exc}[/red]", "-", "-", "-",
                          f"{time.perf_counter() - started:.1f}")
            continue
        reports[source] = report
        table.add_row(source, ", ".join(sorted(report.written)),
                      str(sum(sum(tasks.values()) for tasks in report.written.values())),
                      str(sum(report.regions.values())),
                      str(sum(sum(reasons.values()) for reasons in report.skipped.values())),
                      f"{report.seconds:.1f}")
    run.results["reports"] = reports
    run.console.print(table)


def show_example(run: DemoRun) -> None:
    """Render one built row: its image with numbered boxes (PNG) and its conversation."""
    import pyarrow.parquet as pq

    from builders.synthetic import SOURCE_RELEASE
    from gpt4roi.visualize import render_row

    source, split, index = run.cfg.example.source, run.cfg.example.split, int(run.cfg.example.index)
    shards = sorted(glob.glob(str(run.built(source) / "data" / f"{split}-*.parquet")))
    if not shards:
        run.failures.append(f"example: no built {source}/{split} rows under {run.built(source)}")
        run.console.print(f"[red]no {source}/{split} rows to show[/red]")
        return
    rows = pq.read_table(shards[0]).slice(index, 1).to_pylist()
    if not rows:
        raise ValueError(f"example.index={index} is past the end of {shards[0]}")
    row = rows[0]
    picture = run.work / f"example_{source.replace('+', 'plus')}_{split}.png"
    render_row(row, run.world / SOURCE_RELEASE[source]).save(picture, format="PNG")
    run.results["example"] = {"row": row["id"], "png": str(picture)}
    run.console.rule(f"example row {row['id']} ({row['task']})")
    run.console.print(f"image with numbered boxes: {picture}")
    for k, region in enumerate(row["regions"], start=1):
        run.console.print(f"  <region{k}> = box {[round(v) for v in region['bbox']]} {region['label']}")
    for message in row["conversations"]:
        run.console.print(f"[bold]{message['from']}:[/bold] {message['value']}", markup=True, highlight=False)
    if row["choices"]:
        run.console.print(f"choices: {row['choices']} (label {row['label']})")


def comparison_step(name: str) -> Callable[[DemoRun], None]:
    """A step of the model comparison (:mod:`baselines.comparison`), imported only when it runs, and skipped
    with ``compare.enabled=false``."""

    def step(run: DemoRun) -> None:
        if not run.cfg.compare.enabled:
            run.console.print("skipped (compare.enabled=false)")
            return
        from baselines import comparison

        getattr(comparison, name)(run)

    return step


STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("synthesise the world", synthesise),
    ("build every source", build_sources),
    ("show an example", show_example),
    ("assemble the stage-1 and stage-2 corpora", comparison_step("assemble_corpora")),
    ("train GPT4RoI-tiny and the image-level baselines", comparison_step("train_models")),
    ("evaluate every model and floor on held-out rows", comparison_step("evaluate_models")),
    ("leaderboard", comparison_step("show_leaderboard")),
]


def fill_from_preset(cfg: Any, preset: Any) -> None:
    """Set every ``null`` setting of ``cfg`` to the preset's value (explicit settings and overrides win)."""
    for key, value in preset.items():
        if hasattr(value, "items"):
            fill_from_preset(cfg[key], value)
        elif cfg.get(key) is None:
            cfg[key] = value


def main(cfg: Any) -> int:
    if "presets" in cfg:
        fill_from_preset(cfg, cfg.presets["quick" if cfg.get("quick") else "full"])
    console = Console(emoji=False)  # row ids such as vcr:train:... must not turn into emoji
    run = DemoRun(cfg=cfg, work=Path(cfg.work_dir).resolve(), console=console)
    run.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for number, (title, step) in enumerate(STEPS, start=1):
        console.rule(f"step {number}/{len(STEPS)}: {title}")
        step_started = time.perf_counter()
        step(run)
        console.print(f"[dim]{title}: {time.perf_counter() - step_started:.1f} s[/dim]")
    console.rule(f"demo finished in {time.perf_counter() - started:.1f} s -> {run.work}")
    for failure in run.failures:
        console.print(f"[red]failed: {failure}[/red]", highlight=False)
    return 1 if run.failures else 0
