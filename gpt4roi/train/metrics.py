"""Per-step metrics: ``metrics.jsonl`` (one JSON object per line) and TensorBoard when it is installed.

On resume the lines of steps after the restored checkpoint (written by the killed run, which will be redone)
are dropped, so the file always describes one consistent run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only metrics of rank 0; other ranks get a log that writes nothing."""

    def __init__(self, out: Path, start_step: int, enabled: bool):
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.tensorboard = None
        if not enabled:
            return
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line and _before(json.loads(line), start_step)]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # TensorBoard is optional
            return
        self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _before(record: dict[str, Any], start_step: int) -> bool:
    """Whether a record of an earlier invocation stays: the steps up to the checkpoint, not its evaluations
    (they are written again, so that each appears once)."""
    step = record.get("step", 0)
    return step < start_step or (step == start_step and "loss" in record)


def read_metrics(out: Path) -> list[dict[str, Any]]:
    """The records of ``out/metrics.jsonl`` in order (for summaries, tests and the README figures)."""
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
