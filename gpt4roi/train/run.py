"""``gpt4roi train``: from the composed config to a finished run folder.

Order matters for failing early: values are checked, then the corpus is opened and validated, then
checkpoints are inspected, and only then is the model built and the first step taken.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from . import checkpoint
from . import distributed as dist_utils
from .bundle import Bundle, load_factory
from .data import (
    CorpusSpec,
    ImageLoader,
    MicroBatches,
    Plan,
    letter_answer,
    loader,
    make_plan,
    num_rows,
    open_rows,
)
from .loop import RunState, Trainer
from .metrics import read_metrics
from .preflight import corpus_fingerprint, preflight
from .settings import TrainSettings, read_settings


def _eval_batches(cfg: Any, bundle: Bundle, settings: TrainSettings) -> list[dict[str, Any]]:
    """Held-out rows (``cfg.eval_corpus``), encoded once in the main process."""
    if not cfg.eval_corpus.path:
        return []
    spec = CorpusSpec.from_config(cfg.eval_corpus)
    rows = open_rows(spec)
    images = ImageLoader(spec.image_roots())
    encoded = []
    for row in rows:
        row = letter_answer(row) if spec.answer_format == "letter" else row
        encoded.append(bundle.encode(row, images(row)))
    size = settings.per_device_batch_size
    return [bundle.collate(encoded[i:i + size]) for i in range(0, len(encoded), size)]


def _start_checkpoint(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from: the newest one whose files are all readable. Damaged newer ones are
    named with the reason and set aside as ``<name>.invalid`` (so pruning cannot keep them over good ones);
    when none is readable the run stops, naming each."""
    existing = checkpoint.step_dirs(out / "checkpoints")
    if existing and not resume:
        raise ValueError(f"{out} already holds checkpoints (latest {existing[-1].name}); pass resume=true to "
                         f"continue that run or choose another out=")
    if not existing:
        return None
    start, skipped = checkpoint.newest_valid(existing, full=True)
    if start is None:
        raise checkpoint.CheckpointError(
            f"resume: no checkpoint in {out / 'checkpoints'} can be loaded ({checkpoint.describe_skipped(skipped)}); "
            f"remove them to start over, or choose another out=")
    dist_utils.barrier()  # every rank has read the folders before rank 0 renames any
    if dist_utils.rank() == 0:
        for folder, why in skipped:
            print(f"resume: skipped {folder}: {why}; set aside as {checkpoint.set_aside(folder)}")
        if skipped:
            print(f"resume: resuming from {start}")
    dist_utils.barrier()
    return start


def main(cfg: Any) -> int:
    """Run one training job as configured (single process, or one rank under ``torchrun``)."""
    settings = read_settings(cfg.trainer, cfg.seed, cfg.architecture.max_length)
    spec = CorpusSpec.from_config(cfg.corpus)
    out = Path(cfg.out).expanduser()
    init_from = checkpoint.resolve(cfg.init_from) if cfg.init_from else None
    device = dist_utils.init_from_env()
    try:
        return _run(cfg, settings, spec, out, init_from, device)
    finally:
        dist_utils.shutdown()


def _run(cfg: Any, settings: TrainSettings, spec: CorpusSpec, out: Path, init_from: Path | None,
         device: torch.device) -> int:
    """The run's steps in the order that fails earliest: corpus, checkpoints, pre-flight, model, training."""
    world = dist_utils.world_size()
    accum = settings.grad_accum(world)
    start = _start_checkpoint(out, bool(cfg.resume))
    rows = open_rows(spec)
    plan = make_plan(num_rows(rows), settings.epochs, settings.max_steps, settings.global_batch_size,
                     settings.per_device_batch_size * world, accum)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    bundle = load_factory(cfg.model_factory)(cfg.architecture, settings.max_length)
    fingerprint = corpus_fingerprint(spec, rows)
    _preflight_rows(cfg, spec, bundle, rows, fingerprint, settings.max_length)
    model = _prepare_model(bundle, settings, device, init_from if start is None else None)
    trainer = Trainer(settings, model, device, out, plan.total_steps, accum)
    state = _initial_state(bundle, fingerprint, plan, settings, model, trainer, start)
    if dist_utils.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    batches = _training_batches(rows, plan, settings, spec, bundle, state.step)
    eval_batches = _eval_batches(cfg, bundle, settings)
    started = time.perf_counter()
    result = trainer.fit(iter(batches), state, eval_batches, show_progress=cfg.progress)
    _finish(out, model, bundle, state, result, time.perf_counter() - started, world)
    return 0


def _preflight_rows(cfg: Any, spec: CorpusSpec, bundle: Bundle, rows: Any, fingerprint: str | None,
                    max_length: int) -> None:
    """Encode every row once on the main rank before any step (cached by corpus fingerprint and encoder), so a
    bad row stops the run now rather than hours in; the other ranks wait for it."""
    if dist_utils.rank() == 0:
        encoder_key = json.dumps([bundle.identity, max_length, spec.answer_format], sort_keys=True)
        letter = spec.answer_format == "letter"

        def encode(row, image):
            return bundle.encode(letter_answer(row) if letter else row, image)

        preflight(rows, fingerprint, Path(cfg.cache_dir).expanduser() / "preflight", encode, encoder_key,
                  show_progress=cfg.progress)
    dist_utils.barrier()


def _prepare_model(bundle: Bundle, settings: TrainSettings, device: torch.device,
                   init_from: Path | None) -> torch.nn.Module:
    """The bundle's model with its trainable groups chosen, on ``device``, with ``init_from``'s weights when
    given (not on resume: the checkpoint brings its own), wrapped for the distributed strategy."""
    model = bundle.model
    model.set_trainable(settings.trainable)
    if settings.gradient_checkpointing:  # transformers >= 5 renamed it; both checkpoint each decoder layer
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    model.to(device)
    if init_from is not None:
        checkpoint.load_weights(init_from, model, bundle.identity)
    return dist_utils.wrap(model, settings.strategy, bundle.layer_classes, settings.precision == "bf16" or (
        settings.precision == "auto" and device.type == "cuda"))


def _initial_state(bundle: Bundle, fingerprint: str | None, plan: Plan, settings: TrainSettings,
                   model: torch.nn.Module, trainer: Trainer, start: Path | None) -> RunState:
    """Step 0, or the state of the ``start`` checkpoint (weights and optimiser loaded), which must belong to the
    same corpus and plan: a resumed run repeats the losses of an uninterrupted one only then."""
    state = RunState(step=0, samples=0, tokens=0, model=bundle.identity, corpus=fingerprint,
                     plan={"steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps,
                           "global_batch_size": settings.global_batch_size})
    if start is None:
        return state
    saved = checkpoint.load_full(start, model, trainer.optimizer, bundle.identity)
    if saved["corpus"] != fingerprint or saved["plan"] != state.plan:
        raise checkpoint.CheckpointError(
            f"checkpoint {start} belongs to another corpus or plan (corpus {saved['corpus']}, plan "
            f"{saved['plan']}; this run: corpus {fingerprint}, plan {state.plan}); resume needs the same")
    return RunState(**{key: saved[key] for key in state.__dict__})


def _training_batches(rows: Any, plan: Plan, settings: TrainSettings, spec: CorpusSpec, bundle: Bundle,
                      start_step: int) -> torch.utils.data.DataLoader:
    """This rank's micro-batches from ``start_step`` on, decoded and encoded by ``num_workers`` workers; the
    order depends only on the seed and the step, so a resumed run reads what the interrupted one would have."""
    stream = MicroBatches(rows, plan, rank=dist_utils.rank(), per_device=settings.per_device_batch_size,
                          seed=settings.seed, start_step=start_step, encode=bundle.encode,
                          collate=bundle.collate, images=ImageLoader(spec.image_roots()),
                          letter=spec.answer_format == "letter")
    return loader(stream, settings.num_workers, settings.seed)


def _finish(out: Path, model: torch.nn.Module, bundle: Bundle, state: RunState, result: dict[str, Any],
            seconds: float, world: int) -> None:
    """The final weights (every rank takes part in gathering them), then on the main rank the
    ``from_pretrained`` export (single process only) and ``summary.json``."""
    checkpoint.save_weights(out / "final", model, state.as_json())
    if dist_utils.rank() == 0:
        if bundle.export is not None and world == 1:
            bundle.export(out / "hf")
        _write_summary(out, result, seconds)


def _write_summary(out: Path, result: dict[str, Any], seconds: float) -> None:
    """``summary.json``: first and last loss, evaluation before and after, throughput of this invocation."""
    records = read_metrics(out)
    steps = [r for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    summary = {
        "steps": result["step"],
        "first_loss": steps[0]["loss"] if steps else None,
        "last_loss": steps[-1]["loss"] if steps else None,
        "eval_loss_first": evals[0] if evals else None,
        "eval_loss_last": result["eval_loss"],
        "tokens_per_s": sum(r["tokens"] for r in steps) / max(sum(r["seconds"] for r in steps), 1e-9) if steps else None,
        "wall_seconds": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"train: {summary['steps']} steps, loss {summary['first_loss']} -> {summary['last_loss']}, "
          f"eval loss {summary['eval_loss_first']} -> {summary['eval_loss_last']}, "
          f"{summary['tokens_per_s'] or 0:.0f} tokens/s; run folder {out}")
