"""The training loop: accumulation, clipping, mixed precision, metrics, checkpoints, exact resume.

The loss of a step is the mean token loss over the *whole global batch* (all micro-batches on all ranks):
each micro-batch contributes ``sum of token losses / global label-token count``, scaled by the world size
because DDP and FSDP average gradients. A two-process run therefore optimises exactly the objective of a
one-process run with the same global batch, whatever the padding or the number of answer tokens per row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint
from . import distributed as dist_utils
from .metrics import MetricsLog
from .schedule import learning_rate
from .settings import TrainSettings

IGNORE_INDEX = -100


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors (and lists of tensors, such as per-sample boxes) moved to ``device``."""
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, (list, tuple)):
            return type(value)(move(item) for item in value)
        return value
    return {key: move(value) for key, value in batch.items()}


def label_tokens(batch: dict[str, Any]) -> int:
    """Supervised next-token targets in ``batch`` (labels shifted by one, ignoring -100)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies over supervised positions, in float32."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked for, or by default on a GPU that supports it; fp32 otherwise."""
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def forward_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    return token_loss_sum(model(**inputs).logits, batch["labels"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[dict[str, Any]], device: torch.device,
             precision: str) -> float:
    """Mean token loss over ``batches`` (every rank runs it, as FSDP needs all ranks in a forward)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        batch = to_device(batch, device)
        with autocast(device, precision):
            total += float(forward_loss(model, batch))
        tokens += label_tokens(batch)
    model.train(was_training)
    return total / max(tokens, 1)


@dataclass
class RunState:
    """What a checkpoint records besides tensors (``state.json``)."""

    step: int
    samples: int
    tokens: int
    model: dict[str, Any]
    corpus: str | None
    plan: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Trainer:
    """One training run over a prepared micro-batch iterator."""

    def __init__(self, settings: TrainSettings, model: torch.nn.Module, device: torch.device, out: Path,
                 total_steps: int, accum: int):
        self.settings, self.model, self.device, self.out = settings, model, device, out
        self.total_steps, self.accum = total_steps, accum
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"trainer.trainable={list(settings.trainable)} leaves no trainable parameter")
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, eps=settings.eps,
                                           weight_decay=settings.weight_decay)

    def step(self, micro_batches: list[dict[str, Any]], step: int) -> dict[str, float]:
        """One optimiser step over this rank's ``accum`` micro-batches; returns the step's metrics."""
        world = dist_utils.world_size()
        lr = learning_rate(self.settings, step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        targets = dist_utils.all_reduce_sum(sum(label_tokens(b) for b in micro_batches), self.device)
        scale = world / max(targets, 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        for index, batch in enumerate(micro_batches):
            batch = to_device(batch, self.device)
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["labels"].numel()
            with dist_utils.no_sync(self.model, index == len(micro_batches) - 1):
                with autocast(self.device, self.settings.precision):
                    loss = forward_loss(self.model, batch)
                (loss * scale).backward()
            loss_sum += loss.detach().double()
        if self.settings.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = dist_utils.all_reduce_sum(float(loss_sum), self.device) / max(targets, 1.0)
        if not math.isfinite(loss_value):
            raise ValueError(f"step {step + 1}: the loss is {loss_value} (lower trainer.optimizer.lr?)")
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm, "targets": targets,
                "tokens": dist_utils.all_reduce_sum(tokens, self.device)}

    def fit(self, batches: Iterator[dict[str, Any]], state: RunState, eval_batches: list[dict[str, Any]],
            show_progress: bool = True) -> dict[str, Any]:
        """Train from ``state.step`` to the end of the plan; checkpoints, metrics and evaluation included."""
        settings, main = self.settings, dist_utils.rank() == 0
        log = MetricsLog(self.out, state.step, enabled=main)
        folder = self.out / "checkpoints"
        micro_rows = settings.per_device_batch_size * dist_utils.world_size() * self.accum
        self.model.train()
        if eval_batches and state.step == 0:
            log.write({"step": 0, "eval_loss": evaluate(self.model, eval_batches, self.device, settings.precision)})
        start, record = state.step, {}
        bar = tqdm(total=self.total_steps, initial=state.step, desc="train", unit="step", disable=not (
            main and show_progress), dynamic_ncols=True)
        try:
            for step in range(state.step, self.total_steps):
                started = time.perf_counter()
                micro = [next(batches) for _ in range(self.accum)]
                loaded = time.perf_counter()
                metrics = self.step(micro, step)
                elapsed = time.perf_counter() - started
                state.step, state.samples = step + 1, state.samples + micro_rows
                state.tokens += int(metrics["tokens"])
                record = dict(metrics, step=state.step, seconds=elapsed, wait_seconds=loaded - started,
                              tokens_per_s=metrics["tokens"] / elapsed, samples_per_s=micro_rows / elapsed)
                if eval_batches and settings.eval_every and state.step % settings.eval_every == 0:
                    record["eval_loss"] = evaluate(self.model, eval_batches, self.device, settings.precision)
                if state.step % settings.log_every == 0 or state.step == self.total_steps:
                    log.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                tok_s=f"{record['tokens_per_s']:.0f}")
                if state.step % settings.save_every == 0 or state.step == self.total_steps:
                    checkpoint.save(folder, self.model, self.optimizer, state.as_json(), settings.keep_last)
            final_eval = record.get("eval_loss") if state.step > start else None
            if eval_batches and final_eval is None:
                final_eval = evaluate(self.model, eval_batches, self.device, settings.precision)
                log.write({"step": state.step, "eval_loss": final_eval})
        finally:
            bar.close()
            log.close()
        return {"step": state.step, "eval_loss": final_eval}
