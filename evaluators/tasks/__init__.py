"""Task definitions: ``conf/eval/task/<name>.yaml`` -> a :class:`~evaluators.tasks.base.Task`.

A task config names its ``kind`` (the Python class below), the ``protocol`` it follows (whose official code
defines its prompt, items and scoring: one of :data:`PROTOCOLS`, docs/protocols.md), ``dataset`` (location,
split, row filter), ``prompt`` and scoring settings. ``extends: <other task>`` starts from another task's
config, so the RefCOCO splits and the Visual Genome subset are a few lines each. Overrides from the command
line (``task_overrides.<name>.<key>=...``) are merged last.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .base import Job, Task, TaskResult
from .captioning import CaptionTask
from .grounding import GroundingTask
from .roc import RocBinaryTask, RocSemanticTask
from .sensitivity import RegionSensitivityTask
from .vcr import VcrQARTask, VcrTask

KINDS: dict[str, type[Task]] = {cls.kind: cls for cls in (VcrTask, VcrQARTask, CaptionTask, RocSemanticTask,
                                                          RocBinaryTask, RegionSensitivityTask, GroundingTask)}
#: Whose evaluation a task reproduces; ``ours`` where no official code defines it (docs/protocols.md).
PROTOCOLS = ("gpt4roi", "glamm", "osprey", "ferret", "lmms_eval", "ours")
MAX_EXTENDS = 8

__all__ = ["KINDS", "PROTOCOLS", "Job", "Task", "TaskResult", "load_task_config", "make_task", "available_tasks"]


def available_tasks(task_dir: Path) -> list[str]:
    return sorted(path.stem for path in task_dir.glob("*.yaml") if not path.stem.startswith("_"))


def load_task_config(name: str, task_dir: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config of task ``name`` with its ``extends`` chain and ``overrides`` merged, as a plain dict."""
    chain: list[DictConfig] = []
    current: str | None = name
    while current is not None:
        path = task_dir / f"{current}.yaml"
        if not path.is_file():
            known = ", ".join(available_tasks(task_dir))
            raise ValueError(f"unknown task {current!r} (no {path}); known tasks: {known}")
        if len(chain) >= MAX_EXTENDS:
            raise ValueError(f"task {name}: `extends` chain longer than {MAX_EXTENDS} (a cycle?)")
        loaded = OmegaConf.load(path)
        chain.append(loaded)
        current = loaded.get("extends")
    merged = OmegaConf.merge(*reversed(chain), OmegaConf.create(dict(overrides or {})))
    config = OmegaConf.to_container(merged, resolve=True)
    config.pop("extends", None)
    if config.get("kind") not in KINDS:
        raise ValueError(f"task {name}: kind {config.get('kind')!r} is not one of {sorted(KINDS)}")
    if config.get("protocol") not in PROTOCOLS:
        raise ValueError(f"task {name}: protocol {config.get('protocol')!r} is not one of {list(PROTOCOLS)}")
    return config


def make_task(name: str, task_dir: Path, *, data_root: str | Path | None = None, limit: int | None = None,
              overrides: Mapping[str, Mapping[str, Any]] | None = None,
              generation: Mapping[str, Any] | None = None) -> Task:
    """Instantiate task ``name`` (its parts too, for composite tasks).

    ``overrides`` maps task names to config overrides; ``generation`` overrides every task's generation
    settings (``max_new_tokens``, ``temperature``, ``stop``).
    """
    overrides = overrides or {}
    config = load_task_config(name, task_dir, overrides.get(name))
    config["generation"] = {**(config.get("generation") or {}), **dict(generation or {})}
    cls = KINDS[config["kind"]]
    if cls is VcrQARTask:
        def part(part_name: str) -> Task:
            return make_task(part_name, task_dir, data_root=data_root, limit=None, overrides=overrides,
                             generation=generation)

        return VcrQARTask(name, config, data_root, limit, part_factory=part)
    return cls(name, config, data_root, limit)
