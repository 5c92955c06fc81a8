"""The dataset card's figures: regions per row, box size and aspect, task mix (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builders.corpus.stats import AREA_EDGES, ASPECT_EDGES, REGION_BINS, CorpusStats, Stats

PLOT_DIR = "plots"
# PNG metadata without the matplotlib version, so that the same corpus gives the same files.
_PNG_METADATA = {"Software": None}


def _figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    return pyplot, *pyplot.subplots(1, ncols, figsize=(6.4 * ncols, 4.0), dpi=100)


def _save(pyplot, figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, format="png", metadata=_PNG_METADATA)
    pyplot.close(figure)
    return path.name


def _per_config(stats: CorpusStats) -> dict[str, Stats]:
    return {config: stats.total(config) for config in stats.configs()}


def regions_per_row(stats: CorpusStats, path: Path) -> str:
    pyplot, figure, axes = _figure()
    last = 1
    for config, total in _per_config(stats).items():
        share = total.regions_hist / max(total.rows, 1)
        last = max(last, int(np.nonzero(total.regions_hist)[0].max()) + 1 if total.regions_hist.any() else 1)
        axes.plot(np.arange(REGION_BINS), share, marker=".", label=config)
    axes.set_xlim(-0.5, min(last, REGION_BINS - 1) + 0.5)
    axes.set_xlabel(f"regions per row ({REGION_BINS - 1} = {REGION_BINS - 1} or more)")
    axes.set_ylabel("share of rows")
    axes.set_title("Regions per row")
    axes.legend(fontsize="small")
    return _save(pyplot, figure, path)


def box_size_and_aspect(stats: CorpusStats, path: Path) -> str:
    pyplot, figure, (area_axes, aspect_axes) = _figure(2)
    area_centres = (AREA_EDGES[:-1] + AREA_EDGES[1:]) / 2
    aspect_centres = (ASPECT_EDGES[:-1] + ASPECT_EDGES[1:]) / 2
    for config, total in _per_config(stats).items():
        boxes = max(int(total.area_hist.sum()), 1)
        area_axes.plot(area_centres, total.area_hist / boxes, marker=".", label=config)
        aspect_axes.plot(aspect_centres, total.aspect_hist / boxes, marker=".", label=config)
    area_axes.set_xlabel("log10(box area / image area)")
    area_axes.set_ylabel("share of boxes")
    area_axes.set_title("Box size")
    aspect_axes.set_xlabel("log2(box width / box height)")
    aspect_axes.set_title("Box aspect ratio")
    area_axes.legend(fontsize="small")
    return _save(pyplot, figure, path)


def task_mix(stats: CorpusStats, path: Path) -> str:
    pyplot, figure, axes = _figure()
    configs = stats.configs()
    tasks = sorted({task for _, task in stats.by_config_task})
    bottom = np.zeros(len(configs))
    for task in tasks:
        rows = np.array([stats.by_config_task[(c, task)].rows if (c, task) in stats.by_config_task else 0
                         for c in configs], dtype=float)
        axes.bar(configs, rows, bottom=bottom, label=task)
        bottom += rows
    axes.set_ylabel("rows")
    axes.set_title("Task mix per config")
    axes.tick_params(axis="x", rotation=30)
    axes.legend(fontsize="small")
    return _save(pyplot, figure, path)


def write_plots(stats: CorpusStats, folder: Path) -> list[str]:
    """Write the three figures under ``folder/plots``; returns their paths relative to ``folder``."""
    target = folder / PLOT_DIR
    target.mkdir(parents=True, exist_ok=True)
    names = [regions_per_row(stats, target / "regions_per_row.png"),
             box_size_and_aspect(stats, target / "box_size_aspect.png"),
             task_mix(stats, target / "task_mix.png")]
    return [f"{PLOT_DIR}/{name}" for name in names]
