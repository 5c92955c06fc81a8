"""``gpt4roi demo``: the suite end to end on the built-in synthetic world, and the comparison it leads to.

The demo is a list of steps (:data:`STEPS`), each a function of the shared :class:`DemoRun`:

1. :func:`synthesise` the world: one raw release per source, in its original format;
2. :func:`build_sources`: every registered source built from its release by the real builders;
3. :func:`show_example`: one built row drawn with its numbered boxes, and its conversation;
4. :func:`assemble_corpora`: the stage-1 and stage-2 corpora (``compare.recipes``; the demo's stage 2 keeps
   stage 1's COCO category rows, so it covers the answer format classification asks for), decontaminated
   against their recipes' evaluation splits (the held-out rows the models are scored on share no image with
   training rows);
5. :func:`train_models`: every architecture of ``compare.models``, each starting from the same pretrained toy
   backbone (``compare.backbone``, written by ``gpt4roi pretrain`` on the world's training scenes: "the
   Vicuna", "the CLIP" and a LLaVA-style projector aligned on captions), for ``stage1_steps`` then
   ``stage2_steps`` optimiser steps on the same corpus rows in the same order (same seed, batch, optimiser and
   schedule), as the paper's recipe: stage 1 trains into the frozen LLM only GPT4RoI's region module (its
   projector stays the pretrained one, as GPT4RoI's stage 1 keeps LLaVA's) and the image-level baselines'
   projector (``blind`` uses neither and only runs stage 2, as ``experiment=tiny_blind`` does), stage 2
   everything but the vision tower. ``compare.parallel`` models train at once, one process each;
6. :func:`evaluate_models`: each trained model and each floor on ``compare.tasks``, the same items for all
   (``compare.limit`` per task), VCR by log-likelihood of the options (a tiny model never fine-tuned on the
   letter format cannot be scored by the letter it writes); ``region_sensitivity`` (right region versus another
   region of the same image) for the trained models only, since the floors have no likelihood of free text;
7. :func:`show_leaderboard`: ``gpt4roi leaderboard focus=gpt4roi_tiny`` over the results (intervals; the
   terminal shows GPT4RoI-tiny's paired tests, the HTML report every pair).

Steps 4 to 7 are the comparison, skipped with ``compare.enabled=false``; after it the demo ends with
:func:`show_chat_command`, the ``gpt4roi chat`` command that talks to the GPT4RoI-tiny just trained. They go through the configs and
entry points a user runs (``gpt4roi corpus / train / eval / leaderboard``, composed with
:func:`gpt4roi.configs.compose`), so the demo shows what the commands do. A step that fails for one source
or one model records the failure and lets the others run; the command then exits non-zero. How long the
demo runs is its preset: ``conf/demo/preset/{full,quick}.yaml``.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from gpt4roi.configs import compose

GPT4ROI_MODELS = ("tiny",)  # architectures trained with GPT4RoI's own experiments; the others are baselines
STAGES = ("stage1", "stage2")


@dataclass
class DemoRun:
    """What the steps share: the config, the work folder, the console, the trained models and the failures."""

    cfg: DictConfig
    work: Path
    console: Console
    trained: dict[str, Path] = field(default_factory=dict)  # architecture -> its stage-2 hf/ folder
    failures: list[str] = field(default_factory=list)

    @property
    def world(self) -> Path:
        return self.work / "world"

    def built(self, source: str) -> Path:
        return self.work / "built" / source

    def corpus(self, stage: str) -> Path:
        return self.work / "corpus" / stage

    def run_folder(self, model: str, stage: str) -> Path:
        return self.work / "train" / f"{model}_{stage}"


Step = Callable[[DemoRun], None]


def synthesise(run: DemoRun) -> None:
    """Write the synthetic world: one raw release per source, in its original format."""
    from builders.synthetic import synthesize
    from builders.synthetic.summary import summary_table

    summary = synthesize(run.world, run.cfg.scale, int(run.cfg.seed))
    run.console.print(summary_table(summary, f"synthetic world (scale={run.cfg.scale}, seed={run.cfg.seed}) -> "
                                             f"{run.world}"))


def build_sources(run: DemoRun) -> None:
    """Build every registered source from its synthetic raw root with the real builders."""
    from builders.build import build_source
    from builders.errors import BuildError
    from builders.sources import BUILDERS
    from builders.synthetic import SOURCE_OPTIONS, SOURCE_RELEASE

    table = Table(title="built sources (rows, regions and skips summed over splits)")
    for column in ("source", "splits", "rows", "regions", "skipped", "seconds"):
        table.add_column(column, justify="right" if column in ("rows", "regions", "skipped", "seconds") else "left")
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
        table.add_row(source, ", ".join(sorted(report.written)),
                      str(sum(sum(tasks.values()) for tasks in report.written.values())),
                      str(sum(report.regions.values())),
                      str(sum(sum(reasons.values()) for reasons in report.skipped.values())),
                      f"{report.seconds:.1f}")
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
    run.console.rule(f"example row {row['id']} ({row['task']})")
    run.console.print(f"image with numbered boxes: {picture}")
    for k, region in enumerate(row["regions"], start=1):
        run.console.print(f"  <region{k}> = box {[round(v) for v in region['bbox']]} {region['label']}")
    for message in row["conversations"]:
        run.console.print(f"[bold]{message['from']}:[/bold] {message['value']}", markup=True, highlight=False)
    if row["choices"]:
        run.console.print(f"choices: {row['choices']} (label {row['label']})")


def set_threads(run: DemoRun) -> None:
    """``compare.threads`` torch threads (the tiny models' matrices are too small to gain from more, and extra
    threads lose badly on a busy machine); ``null`` leaves torch's default."""
    import torch

    if run.cfg.compare.get("threads"):
        torch.set_num_threads(int(run.cfg.compare.threads))


def image_roots(run: DemoRun) -> dict[str, str]:
    """Each built source's raw release in the world: rows' image paths are relative to it."""
    from builders.synthetic import SOURCE_RELEASE

    return {source: str(run.world / release) for source, release in SOURCE_RELEASE.items()}


def assemble_corpora(run: DemoRun) -> None:
    """``gpt4roi corpus recipe=stage1|stage2 decontaminate=true`` on the demo's world."""
    from builders.corpus.assembler import assemble
    from builders.corpus.recipe import parse_recipe
    from builders.corpus.settings import settings_from_cfg

    table = Table(title="stage corpora (decontaminated against the recipes' evaluation splits)")
    for column in ("corpus", "rows written", "decontaminated", "seconds"):
        table.add_column(column, justify="left" if column == "corpus" else "right")
    for stage in STAGES:
        cfg = compose("corpus", [f"recipe={run.cfg.compare.recipes[stage]}", f"raw_root={run.world}",
                                 f"out={run.corpus(stage)}",
                                 f"seed={int(run.cfg.seed)}", "decontaminate=true", "plots=false", "progress=false"])
        report = assemble(parse_recipe(OmegaConf.to_container(cfg.recipe, resolve=True)), settings_from_cfg(cfg))
        counts = [c for splits in report["entries"].values() for c in splits.values()]
        table.add_row(stage, str(sum(c["written"] for c in counts)), str(sum(c["decontaminated"] for c in counts)),
                      f"{report['seconds']:.1f}")
    run.console.print(table)


def is_blind(model: str) -> bool:
    """A blind model has no stage 1: stage 1 trains the projector, which it never uses (tiny_blind experiment)."""
    architecture = compose("train", [f"architecture={model}"]).architecture
    return architecture.get("renderer", {}).get("name") == "blind"


def train_config(run: DemoRun, model: str, stage: str) -> DictConfig:
    """The composed ``gpt4roi train`` config of one architecture and stage (same rows, steps and seed for all)."""
    compare = run.cfg.compare
    family = "tiny" if model in GPT4ROI_MODELS else "tiny_image"
    steps = int(compare.stage1_steps if stage == "stage1" else compare.stage2_steps)
    overrides = [f"experiment={family}_{stage}", f"architecture={model}", f"corpus.path={run.corpus(stage)}",
                 "eval_corpus.path=null", f"out={run.run_folder(model, stage)}", f"trainer.max_steps={steps}",
                 f"seed={int(run.cfg.seed)}", f"cache_dir={run.work / 'cache'}", "progress=false",
                 f"trainer.num_workers={int(compare.num_workers)}",
                 f"architecture.max_length={int(compare.max_length)}",
                 f"architecture.backbone={compare.backbone or 'null'}"]
    if stage == "stage2":
        overrides.append("init_from=null" if is_blind(model) else f"init_from={run.run_folder(model, 'stage1')}")
    cfg = compose("train", overrides)
    with open_dict(cfg):
        cfg.corpus.image_root = image_roots(run)
    return cfg


def train_one(run: DemoRun, model: str) -> tuple[list[str], int]:
    """Stage 1 then stage 2 of one model: the first -> last loss of each stage and the steps taken."""
    from gpt4roi.train import main as train_main

    set_threads(run)
    losses, steps = [], 0
    for stage in STAGES:
        folder = run.run_folder(model, stage)
        if stage == "stage1" and is_blind(model):
            losses.append("none (no projector in use)")
            continue
        shutil.rmtree(folder, ignore_errors=True)  # a rerun trains afresh, never resumes a stale run
        train_main(train_config(run, model, stage))
        summary = json.loads((folder / "summary.json").read_text())
        losses.append(f"{summary['first_loss']:.2f} -> {summary['last_loss']:.2f}")
        steps += int(summary["steps"])
    return losses, steps


def quiet_libraries() -> None:
    """No per-split or per-shard progress bars from ``datasets`` and ``transformers`` (dozens of lines per model)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _train_in_worker(cfg: DictConfig, work: Path, model: str) -> tuple[list[str], int, float]:
    """:func:`train_one` in a worker process (its own console, quiet)."""
    quiet_libraries()
    started = time.perf_counter()
    losses, steps = train_one(DemoRun(cfg=cfg, work=work, console=Console(quiet=True)), model)
    return losses, steps, time.perf_counter() - started


def train_models(run: DemoRun) -> None:
    """Every model of ``compare.models``, ``compare.parallel`` at a time (one process each, one thread each);
    a model that fails is reported and left out of the evaluation."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    table = Table(title="training (loss first -> last step of each stage)")
    for column in ("model", "stage 1 loss", "stage 2 loss", "steps", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    models = list(run.cfg.compare.models)
    with ProcessPoolExecutor(max_workers=max(1, int(run.cfg.compare.parallel)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {model: pool.submit(_train_in_worker, run.cfg, run.work, model) for model in models}
        for model in models:
            try:
                losses, steps, seconds = futures[model].result()
            except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
                run.failures.append(f"train {model}: {type(exc).__name__}: {exc}")
                table.add_row(model, f"[red]FAILED: {exc}[/red]", "-", "-", "-")
                continue
            run.trained[model] = run.run_folder(model, "stage2") / "hf"
            table.add_row(model, *losses, str(steps), f"{seconds:.0f}")
    run.console.print(table)


def eval_config(run: DemoRun, model_overrides: list[str], image_root: dict[str, str] | None = None,
                tasks: list[str] | None = None) -> DictConfig:
    """The composed ``gpt4roi eval`` config: the demo's tasks (or ``tasks``), items and generation settings."""
    compare = run.cfg.compare
    overrides = [*model_overrides, f"tasks=[{','.join(tasks or compare.tasks)}]", f"data_root={run.work / 'built'}",
                 f"output_dir={run.work / 'results'}", f"limit={int(compare.limit)}", "progress=false",
                 f"batch_size={int(compare.batch_size)}"]
    cfg = compose("eval", overrides)
    with open_dict(cfg):
        cfg.generation = {"max_new_tokens": int(compare.max_new_tokens)}
        cfg.task_overrides = {
            "vcr_qa": {"mode": "loglikelihood"}, "vcr_qar": {"mode": "loglikelihood"},
            "roc_semantic": {"dataset": {"annotation": str(run.world / "coco" / "annotations" /
                                                           "instances_val2017.json")}},
        }
        if image_root is not None:
            cfg.model.image_root = image_root
    return cfg


def trained_model_overrides(run: DemoRun, model: str, folder: Path) -> list[str]:
    """The evaluation adapter of a trained architecture (conf/eval/model/gpt4roi.yaml or image_level.yaml)."""
    gpt4roi = model in GPT4ROI_MODELS
    return ["model=gpt4roi" if gpt4roi else "model=image_level",
            f"model.name={'gpt4roi_' + model if gpt4roi else model}", f"model.pretrained={folder}",
            f"model.batch_size={int(run.cfg.compare.batch_size)}",
            "model.prompt_format=plain"]  # trained on the suite's rows, which open with "<image>\n" alone


def evaluate_models(run: DemoRun) -> None:
    """Every trained model and every floor on the same items of the same tasks."""
    from evaluators.runner import main as eval_main

    set_threads(run)
    shutil.rmtree(run.work / "results", ignore_errors=True)
    jobs: list[tuple[str, list[str], dict[str, str] | None, list[str] | None]] = [
        (model, trained_model_overrides(run, model, folder), image_roots(run), None)
        for model, folder in run.trained.items()
    ]
    # a floor has no likelihood of a free-text answer: it skips the tasks only models can answer
    floor_tasks = [task for task in run.cfg.compare.tasks if task not in run.cfg.compare.model_only_tasks]
    jobs += [(floor, [f"model={floor}"], None, floor_tasks) for floor in run.cfg.compare.floors]
    for name, overrides, roots, tasks in jobs:
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its per-model table: the leaderboard says it all
                eval_main(eval_config(run, overrides, roots, tasks))
            run.console.print(f"evaluated {name} on {', '.join(tasks or run.cfg.compare.tasks)} "
                              f"({time.perf_counter() - started:.0f} s)", highlight=False)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
            run.failures.append(f"eval {name}: {type(exc).__name__}: {exc}")
            run.console.print(f"[red]eval {name} failed: {type(exc).__name__}: {exc}[/red]")


def show_leaderboard(run: DemoRun) -> None:
    """``gpt4roi leaderboard`` over the demo's results: markdown on the terminal, .md/.csv/.html written."""
    from evaluators.leaderboard import main as leaderboard_main

    out = run.work / "leaderboard"
    focus = run.cfg.compare.focus
    leaderboard_main(compose("leaderboard", [f"results={run.work / 'results'}", f"output_dir={out}",
                                             f"focus={focus or 'null'}"]))
    run.console.print(f"HTML report (every paired test): {out / 'leaderboard.html'}")


def show_chat_command(run: DemoRun) -> None:
    """How to talk to the GPT4RoI model the demo trained."""
    trained = [model for model in GPT4ROI_MODELS if model in run.trained]
    if not trained:
        run.console.print("[red]no trained GPT4RoI model to chat with[/red]")
        return
    folder = run.run_folder(trained[0], "stage2")
    run.console.print("Talk to the GPT4RoI-tiny the demo trained (draw boxes on a synthetic picture, ask about "
                      "<region1>):", highlight=False)
    run.console.print(f"  gpt4roi chat model={folder}", highlight=False, soft_wrap=True)


def comparison(step: Step) -> Step:
    """A step of the comparison, skipped with ``compare.enabled=false`` (the demo then stops after the example)."""

    def step_if_enabled(run: DemoRun) -> None:
        if not run.cfg.compare.enabled:
            run.console.print("skipped (compare.enabled=false)")
            return
        step(run)

    return step_if_enabled


STEPS: list[tuple[str, Step]] = [
    ("synthesise the world", synthesise),
    ("build every source", build_sources),
    ("show an example", show_example),
    ("assemble the stage-1 and stage-2 corpora", comparison(assemble_corpora)),
    ("train GPT4RoI-tiny and the image-level baselines", comparison(train_models)),
    ("evaluate every model and floor on held-out rows", comparison(evaluate_models)),
    ("leaderboard", comparison(show_leaderboard)),
]


def main(cfg: DictConfig) -> int:
    """Run every step in order; non-zero when any step recorded a failure."""
    console = Console(emoji=False)  # row ids such as vcr:train:... must not turn into emoji
    run = DemoRun(cfg=cfg, work=Path(cfg.work_dir).resolve(), console=console)
    run.work.mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    started = time.perf_counter()
    for number, (title, step) in enumerate(STEPS, start=1):
        console.rule(f"step {number}/{len(STEPS)}: {title}")
        step_started = time.perf_counter()
        step(run)
        console.print(f"[dim]{title}: {time.perf_counter() - step_started:.1f} s[/dim]")
    console.rule(f"demo finished in {time.perf_counter() - started:.1f} s -> {run.work}")
    for failure in run.failures:
        console.print(f"[red]failed: {failure}[/red]", highlight=False)
    if cfg.compare.enabled:
        show_chat_command(run)
    return 1 if run.failures else 0
