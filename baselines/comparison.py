"""The demo's comparison: GPT4RoI-tiny against the image-level baselines and the floors, end to end.

Four demo steps (appended to :data:`gpt4roi.demo.STEPS`), each a function of the demo's run (``cfg``,
``work``, ``world``, ``built(source)``, ``console``, ``results``, ``failures``):

1. :func:`assemble_corpora`: the stage-1 and stage-2 corpora from the synthetic world, decontaminated
   against their recipes' evaluation splits (the held-out rows the models are scored on share no image with
   training rows);
2. :func:`train_models`: every model of ``compare.models`` for ``stage1_steps`` then ``stage2_steps``
   optimiser steps, on the same corpus rows in the same order (same seed, batch and schedule): GPT4RoI with
   ``tiny_stage1`` / ``tiny_stage2``, the baselines with ``tiny_image_stage1`` / ``tiny_image_stage2``
   (stage 1 trains what each model puts between the image and the LLM: the region module, or the
   projector; ``blind`` has neither in use and only runs stage 2, as ``experiment=tiny_blind`` does);
3. :func:`evaluate_models`: each trained model and each floor on ``compare.tasks`` (the same items for all,
   ``compare.limit`` per task), VCR by log-likelihood of the options (a tiny model never fine-tuned on the
   letter format cannot be scored by the letter it writes);
4. :func:`show_leaderboard`: ``gpt4roi leaderboard`` over the results (intervals, paired p-values, HTML).

Everything goes through the same configs and entry points a user runs (``gpt4roi corpus / train / eval /
leaderboard``), composed with :func:`gpt4roi.cli.compose`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict
from rich.table import Table

GPT4ROI_MODELS = ("tiny",)  # conf/model configs trained with GPT4RoI's own experiments


def _compose(command: str, overrides: list[str]):
    from gpt4roi.cli import compose

    return compose(command, overrides)


def set_threads(run: Any) -> None:
    """``compare.threads`` torch threads (the tiny models' matrices are too small to gain from more, and extra
    threads lose badly on a busy machine); ``null`` leaves torch's default."""
    import torch

    if run.cfg.compare.get("threads"):
        torch.set_num_threads(int(run.cfg.compare.threads))


def image_roots(run: Any) -> dict[str, str]:
    """Each built source's raw release in the world: rows' image paths are relative to it."""
    from builders.synthetic import SOURCE_RELEASE

    return {source: str(run.world / release) for source, release in SOURCE_RELEASE.items()}


def corpus_folder(run: Any, stage: str) -> Path:
    return run.work / "corpus" / stage


def assemble_corpora(run: Any) -> None:
    """``gpt4roi corpus recipe=stage1|stage2 decontaminate=true`` on the demo's world."""
    from builders.corpus.assembler import assemble
    from builders.corpus.recipe import parse_recipe
    from builders.corpus.settings import settings_from_cfg

    table = Table(title="stage corpora (decontaminated against the recipes' evaluation splits)")
    for column in ("corpus", "rows written", "decontaminated", "seconds"):
        table.add_column(column, justify="left" if column == "corpus" else "right")
    for stage in ("stage1", "stage2"):
        cfg = _compose("corpus", [f"recipe={stage}", f"raw_root={run.world}", f"out={corpus_folder(run, stage)}",
                                  f"seed={int(run.cfg.seed)}", "decontaminate=true", "plots=false", "progress=false"])
        report = assemble(parse_recipe(OmegaConf.to_container(cfg.recipe, resolve=True)), settings_from_cfg(cfg))
        counts = [c for splits in report["entries"].values() for c in splits.values()]
        table.add_row(stage, str(sum(c["written"] for c in counts)), str(sum(c["decontaminated"] for c in counts)),
                      f"{report['seconds']:.1f}")
    run.console.print(table)


def run_folder(run: Any, model: str, stage: str) -> Path:
    return run.work / "train" / f"{model}_{stage}"


def train_config(run: Any, model: str, stage: str):
    """The composed ``gpt4roi train`` config of one model and stage (same rows, steps and seed for all)."""
    compare = run.cfg.compare
    family = "tiny" if model in GPT4ROI_MODELS else "tiny_image"
    steps = int(compare.stage1_steps if stage == "stage1" else compare.stage2_steps)
    overrides = [f"experiment={family}_{stage}", f"model={model}", f"corpus.path={corpus_folder(run, stage)}",
                 "eval_corpus.path=null", f"out={run_folder(run, model, stage)}", f"train.max_steps={steps}",
                 f"seed={int(run.cfg.seed)}", f"cache_dir={run.work / 'cache'}", "progress=false",
                 f"train.num_workers={int(compare.num_workers)}", f"train.max_length={int(compare.max_length)}"]
    if stage == "stage2":
        blind = _compose("train", overrides).model.get("renderer", {}).get("name") == "blind"
        overrides.append("init_from=null" if blind else f"init_from={run_folder(run, model, 'stage1')}")
    cfg = _compose("train", overrides)
    with open_dict(cfg):
        cfg.corpus.image_root = image_roots(run)
    return cfg


def is_blind(run: Any, model: str) -> bool:
    """A blind model has no stage 1: stage 1 trains the projector, which it never uses (tiny_blind experiment)."""
    return train_config(run, model, "stage2").model.get("renderer", {}).get("name") == "blind"


def train_models(run: Any) -> None:
    """Stage 1 then stage 2 of every model; a model that fails is reported and left out of the evaluation."""
    from gpt4roi.train import main as train_main

    set_threads(run)
    table = Table(title="training (loss first -> last step of each stage)")
    for column in ("model", "stage 1 loss", "stage 2 loss", "steps", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    trained: dict[str, Path] = {}
    for model in run.cfg.compare.models:
        started, losses, steps = time.perf_counter(), [], 0
        try:
            for stage in ("stage1", "stage2"):
                folder = run_folder(run, model, stage)
                if stage == "stage1" and is_blind(run, model):
                    losses.append("none (no projector in use)")
                    continue
                shutil.rmtree(folder, ignore_errors=True)  # a rerun trains afresh, never resumes a stale run
                train_main(train_config(run, model, stage))
                summary = json.loads((folder / "summary.json").read_text())
                losses.append(f"{summary['first_loss']:.2f} -> {summary['last_loss']:.2f}")
                steps += int(summary["steps"])
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
            run.failures.append(f"train {model}: {type(exc).__name__}: {exc}")
            table.add_row(model, f"[red]FAILED: {exc}[/red]", "-", "-", f"{time.perf_counter() - started:.0f}")
            continue
        trained[model] = run_folder(run, model, "stage2") / "hf"
        table.add_row(model, *losses, str(steps), f"{time.perf_counter() - started:.0f}")
    run.results["trained"] = trained
    run.console.print(table)


def eval_config(run: Any, model_overrides: list[str], image_root: dict[str, str] | None = None):
    """The composed ``gpt4roi eval`` config: the demo's tasks, items and generation settings."""
    compare = run.cfg.compare
    overrides = [*model_overrides, f"tasks=[{','.join(compare.tasks)}]", f"data_root={run.work / 'built'}",
                 f"output_dir={run.work / 'results'}", f"limit={int(compare.limit)}", "progress=false",
                 f"batch_size={int(compare.batch_size)}"]
    cfg = _compose("eval", overrides)
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


def evaluate_models(run: Any) -> None:
    """Every trained model and every floor on the same items of the same tasks."""
    from evaluators.runner import main as eval_main

    set_threads(run)
    shutil.rmtree(run.work / "results", ignore_errors=True)
    jobs: list[tuple[str, list[str], dict[str, str] | None]] = [
        (model, ["model=gpt4roi" if model in GPT4ROI_MODELS else "model=image_level",
                 f"model.name={'gpt4roi_' + model if model in GPT4ROI_MODELS else model}",
                 f"model.pretrained={folder}", f"model.batch_size={int(run.cfg.compare.batch_size)}"],
         image_roots(run))
        for model, folder in run.results.get("trained", {}).items()
    ]
    jobs += [(floor, [f"model={floor}"], None) for floor in run.cfg.compare.floors]
    for name, overrides, roots in jobs:
        try:
            eval_main(eval_config(run, overrides, roots))
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
            run.failures.append(f"eval {name}: {type(exc).__name__}: {exc}")
            run.console.print(f"[red]eval {name} failed: {type(exc).__name__}: {exc}[/red]")


def show_leaderboard(run: Any) -> None:
    """``gpt4roi leaderboard`` over the demo's results: markdown on the terminal, .md/.csv/.html written."""
    from evaluators.leaderboard import main as leaderboard_main

    out = run.work / "leaderboard"
    leaderboard_main(_compose("leaderboard", [f"results={run.work / 'results'}", f"output_dir={out}"]))
    run.results["leaderboard"] = out
    run.console.print(f"HTML report: {out / 'leaderboard.html'}")
