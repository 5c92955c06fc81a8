"""The learning-rate schedule as a pure function of the step.

A function of the step (rather than a stateful scheduler object) makes exact resume trivial: the resumed
run recomputes the same rate from the step it restored. The shapes follow the usual definitions
(linear warmup from 0, then cosine / linear decay to ``min_lr_ratio`` x peak, or constant).
"""

from __future__ import annotations

import math

from .settings import TrainSettings


def warmup_steps(settings: TrainSettings, total_steps: int) -> int:
    """``schedule.warmup_steps`` when set, else ``ceil(warmup_ratio x total)`` (as HF's ``TrainingArguments``)."""
    if settings.warmup_steps > 0:
        return settings.warmup_steps
    return math.ceil(settings.warmup_ratio * total_steps)


def learning_rate(settings: TrainSettings, step: int, total_steps: int) -> float:
    """The rate used by optimiser step ``step`` (0-based) of a run of ``total_steps`` steps."""
    warmup = warmup_steps(settings, total_steps)
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    if settings.schedule == "constant":
        return settings.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    if settings.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    else:
        factor = max(0.0, 1.0 - progress)
    floor = settings.min_lr_ratio
    return settings.lr * (floor + (1.0 - floor) * factor)
