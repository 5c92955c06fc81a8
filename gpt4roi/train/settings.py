"""The training settings, read once from the composed Hydra config and checked before anything is built.

Hydra already refuses keys that do not exist; this module refuses values that do (a negative learning rate, a
global batch that the per-device batch and world size cannot divide), naming the key and the allowed range,
so that a bad run stops before a model is built or a corpus is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISIONS = ("auto", "bf16", "fp32")
STRATEGIES = ("auto", "none", "ddp", "fsdp")
SCHEDULES = ("cosine", "linear", "constant")
GROUPS = ("region_module", "projector", "llm", "vision")


@dataclass(frozen=True)
class TrainSettings:
    """Everything the loop needs from ``cfg.trainer`` (see ``conf/train/trainer/stage1.yaml`` for the meaning),
    plus the run's ``seed`` and the architecture's ``max_length`` (tokens per sample)."""

    trainable: tuple[str, ...]
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    schedule: str
    warmup_ratio: float
    warmup_steps: int
    min_lr_ratio: float
    epochs: int
    max_steps: int
    global_batch_size: int
    per_device_batch_size: int
    max_length: int
    precision: str
    gradient_checkpointing: bool
    max_grad_norm: float
    strategy: str
    num_workers: int
    log_every: int
    save_every: int
    keep_last: int
    eval_every: int
    seed: int

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per optimiser step on each rank, so that the global batch is the configured one."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(f"trainer.global_batch_size={self.global_batch_size} is not a multiple of "
                             f"trainer.per_device_batch_size ({self.per_device_batch_size}) x world size "
                             f"({world_size})")
        return self.global_batch_size // per_step


def _require(ok: bool, key: str, value: Any, expected: str, section: str = "trainer") -> None:
    if not ok:
        raise ValueError(f"{section}.{key}={value!r} is out of range (expected {expected})")


def read_settings(trainer: Any, seed: int, max_length: int) -> TrainSettings:
    """Check every value of ``cfg.trainer`` and ``max_length`` and return them as :class:`TrainSettings`."""
    opt, sched = trainer.optimizer, trainer.schedule
    trainable = tuple(trainer.trainable)
    unknown = [name for name in trainable if name not in GROUPS]
    _require(bool(trainable) and not unknown, "trainable", list(trainable), f"a non-empty subset of {GROUPS}")
    _require(float(opt.lr) > 0, "optimizer.lr", opt.lr, "> 0")
    _require(float(opt.weight_decay) >= 0, "optimizer.weight_decay", opt.weight_decay, ">= 0")
    betas = tuple(float(b) for b in opt.betas)
    _require(len(betas) == 2 and all(0 <= b < 1 for b in betas), "optimizer.betas", list(betas), "two values in [0, 1)")
    _require(float(opt.eps) > 0, "optimizer.eps", opt.eps, "> 0")
    _require(sched.name in SCHEDULES, "schedule.name", sched.name, f"one of {SCHEDULES}")
    _require(0 <= float(sched.warmup_ratio) < 1, "schedule.warmup_ratio", sched.warmup_ratio, "in [0, 1)")
    _require(int(sched.warmup_steps) >= 0, "schedule.warmup_steps", sched.warmup_steps, ">= 0")
    _require(0 <= float(sched.min_lr_ratio) <= 1, "schedule.min_lr_ratio", sched.min_lr_ratio, "in [0, 1]")
    _require(int(trainer.epochs) >= 1, "epochs", trainer.epochs, ">= 1")
    _require(int(trainer.max_steps) == -1 or int(trainer.max_steps) >= 1, "max_steps", trainer.max_steps, "-1 or >= 1")
    for key in ("global_batch_size", "per_device_batch_size", "log_every", "save_every", "keep_last"):
        _require(int(trainer[key]) >= 1, key, trainer[key], ">= 1")
    _require(int(max_length) >= 1, "max_length", max_length, ">= 1", section="architecture")
    _require(int(trainer.eval_every) >= 0, "eval_every", trainer.eval_every, ">= 0 (0: only before and after)")
    _require(int(trainer.num_workers) >= 0, "num_workers", trainer.num_workers, ">= 0")
    _require(float(trainer.max_grad_norm) >= 0, "max_grad_norm", trainer.max_grad_norm, ">= 0 (0: no clipping)")
    _require(trainer.precision in PRECISIONS, "precision", trainer.precision, f"one of {PRECISIONS}")
    _require(trainer.strategy in STRATEGIES, "strategy", trainer.strategy, f"one of {STRATEGIES}")
    return TrainSettings(
        trainable=trainable, lr=float(opt.lr), weight_decay=float(opt.weight_decay), betas=betas,
        eps=float(opt.eps), schedule=sched.name, warmup_ratio=float(sched.warmup_ratio),
        warmup_steps=int(sched.warmup_steps), min_lr_ratio=float(sched.min_lr_ratio), epochs=int(trainer.epochs),
        max_steps=int(trainer.max_steps), global_batch_size=int(trainer.global_batch_size),
        per_device_batch_size=int(trainer.per_device_batch_size), max_length=int(max_length),
        precision=trainer.precision, gradient_checkpointing=bool(trainer.gradient_checkpointing),
        max_grad_norm=float(trainer.max_grad_norm), strategy=trainer.strategy, num_workers=int(trainer.num_workers),
        log_every=int(trainer.log_every), save_every=int(trainer.save_every), keep_last=int(trainer.keep_last),
        eval_every=int(trainer.eval_every), seed=int(seed),
    )
