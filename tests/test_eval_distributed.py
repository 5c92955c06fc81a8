"""``gpt4roi eval`` under torchrun: 2 gloo processes on CPU write what 1 process writes, and survive a killed rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_eval_runner import (
    REPO,
    SlowCountingModel,
    _cached,
    gpt4roi,
    vcr_rows,
    wait_until_cached,
    write_folder,
)

from baselines.hf_vlm_tiny import write_tiny_vlm
from builders.build import build_source
from builders.synthetic import synthesize
from evaluators.cache import AnswerCache
from evaluators.distributed import ONE_PROCESS, prepare_shared, rank_file, rank_files

TASKS = ("vcr_qa", "vcr_qar", "vcr_q_ar")
REQUESTS = 16 + 16  # vcr_qa's and vcr_qar's; vcr_q_ar asks the same ones again


class RankLoggingModel(SlowCountingModel):
    """:class:`SlowCountingModel` logging to ``<log>.rank<r>`` and leaving its pid in ``<log>.pid<r>``."""

    def __init__(self, log: str, delay: float = 0.0):
        rank = os.environ.get("RANK", "0")
        super().__init__(f"{log}.rank{rank}", delay)
        Path(f"{log}.pid{rank}").write_text(str(os.getpid()))


@pytest.fixture(scope="module")
def vcr_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_distributed")
    write_folder(root / "vcr", {"train": vcr_rows("train", 8), "validation": vcr_rows("validation", 16)})
    return root


def common(world: Path, out: Path, log: Path) -> list[str]:
    return ["model=chance", "model._target_=test_eval_distributed.RankLoggingModel", "~model.seed", f"+model.log={log}",
            f"data_root={world}", f"output_dir={out}", "batch_size=2", "progress=false", f"tasks=[{','.join(TASKS)}]"]


def torchrun(args: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             f"--master_port={port}", "-m", "gpt4roi.cli", "eval", *args],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def logged(log: Path, rank: int) -> list[str]:
    path = Path(f"{log}.rank{rank}")
    return path.read_text().split() if path.exists() else []


def assert_same_results(one: Path, other: Path, model: str = "chance", tasks: tuple[str, ...] = TASKS) -> None:
    """Identical predictions (byte for byte) and metrics, intervals and counts, task by task."""
    for task in tasks:
        a, b = (json.loads((folder / model / f"{task}.json").read_text()) for folder in (one, other))
        assert (a["n"], a["metrics"], a["ci95"], a["extra"]) == (b["n"], b["metrics"], b["ci95"], b["extra"])
        assert a["requests"]["total"] == b["requests"]["total"]
        predictions = [(folder / model / f"{task}.predictions.jsonl").read_bytes() for folder in (one, other)]
        assert predictions[0] == predictions[1]


def test_rank_files_of_a_killed_run_are_merged_or_set_aside(tmp_path):
    shared = tmp_path / "cache.sqlite"
    for rank, answers in enumerate(([("s", "a", "{}"), "A"], [("s", "b", "{}"), 1.5], [("s", "c", "{}"), "C"])):
        cache = AnswerCache(rank_file(shared, rank), "model")
        cache.put_many([answers])
        cache.close()
    (tmp_path / "cache.sqlite.rank1-wal").touch()  # SQLite's files beside a rank file are not rank files
    assert [p.name for p in rank_files(shared)] == ["cache.sqlite.rank0", "cache.sqlite.rank1", "cache.sqlite.rank2"]
    assert prepare_shared(shared, rebuild=False, ranks=ONE_PROCESS) == 3
    assert not rank_files(shared) and not list(tmp_path.glob("cache.sqlite.rank*"))
    merged = AnswerCache(shared, "model")
    assert merged.get_many([("s", k, "{}") for k in "abc"]) == {("s", "a", "{}"): "A", ("s", "b", "{}"): 1.5,
                                                               ("s", "c", "{}"): "C"}
    merged.close()
    AnswerCache(rank_file(shared, 0), "model").close()
    assert prepare_shared(shared, rebuild=True, ranks=ONE_PROCESS) == 0  # rebuild: set aside, never merged
    assert (tmp_path / "cache.sqlite.old").is_file() and (tmp_path / "cache.sqlite.rank0.old").is_file()
    assert AnswerCache(shared, "model").count() == 0


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(vcr_world, tmp_path):
    single = tmp_path / "single"
    gpt4roi("eval", *common(vcr_world, single, tmp_path / "one"))
    out, log = tmp_path / "two", tmp_path / "two"
    finish(torchrun(common(vcr_world, out, log), port=29611))
    assert_same_results(single, out)
    shares = [logged(log, 0), logged(log, 1)]
    assert len(shares[0]) == len(shares[1]) == REQUESTS // 2  # balanced, and nothing asked twice ...
    assert not set(shares[0]) & set(shares[1]) and len(_cached(out / "cache.sqlite")) == REQUESTS  # ... by anyone
    assert not list(out.glob("cache.sqlite.rank*"))  # merged into the shared cache and gone
    q_ar = json.loads((out / "chance" / "vcr_q_ar.json").read_text())
    assert q_ar["requests"] == {"total": REQUESTS, "answered_now": 0}  # found in the shared cache, either rank's


@pytest.mark.slow
def test_a_killed_rank_resumes_without_recomputing(vcr_world, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first"
    slow = torchrun([*common(vcr_world, out, log), "+model.delay=0.4"], port=29623)
    rank1 = out / "cache.sqlite.rank1"
    wait_until_cached(slow, rank1, 4, timeout=240)
    os.kill(int(Path(f"{log}.pid1").read_text()), signal.SIGKILL)
    slow.communicate(timeout=120)
    assert slow.returncode != 0 and not (out / "chance" / "vcr_qar.json").exists()
    assert rank1.exists()  # the killed rank's answers wait in its file
    before = _cached(out / "cache.sqlite") | _cached(rank1) | _cached(out / "cache.sqlite.rank0")
    assert 4 <= len(before) < REQUESTS

    again = tmp_path / "again"
    in_rank_files = len(_cached(out / "cache.sqlite.rank0")) + len(_cached(rank1))
    output = finish(torchrun(common(vcr_world, out, again), port=29631))
    assert f"merged {in_rank_files} answers a killed multi-process run left" in output
    asked = logged(again, 0) + logged(again, 1)
    assert not set(asked) & before, "an answer a rank had cached was asked again"
    assert len(asked) == len(set(asked)) == REQUESTS - len(before)
    assert not list(out.glob("cache.sqlite.rank*"))
    single = tmp_path / "single"
    gpt4roi("eval", *common(vcr_world, single, tmp_path / "one"))
    assert_same_results(single, out)


@pytest.mark.slow
def test_a_hub_vlm_on_two_processes_answers_bit_for_bit_what_one_process_answers(tmp_path):
    """Float answers of a batched model: the ranks make exactly the model calls one process makes."""
    world, built = tmp_path / "world", tmp_path / "built"
    synthesize(world, "tiny", 0)
    build_source("vcr", world / "vcr", built / "vcr", seed=0, progress=False)
    write_tiny_vlm("qwen2_vl", tmp_path / "qwen2_vl")
    args = ["model=hf_vlm_qwen2_vl", "model.name=qwen2_vl_tiny", f"model.pretrained={tmp_path / 'qwen2_vl'}",
            "model.dtype=float32", "model.processor_class=baselines.hf_vlm_tiny:ImageOnlyQwen2VLProcessor",
            f"model.image_root={world / 'vcr'}", f"data_root={built}", "tasks=[vcr_qa,vcr_qar]", "limit=12",
            "batch_size=4", "progress=false", "+generation.max_new_tokens=4",
            "+task_overrides.vcr_qar.mode=loglikelihood"]  # vcr_qa generates, vcr_qar scores options
    gpt4roi("eval", *args, f"output_dir={tmp_path / 'one'}")
    finish(torchrun([*args, f"output_dir={tmp_path / 'two'}"], port=29641))
    assert_same_results(tmp_path / "one", tmp_path / "two", "qwen2_vl_tiny", ("vcr_qa", "vcr_qar"))
    scores = [json.loads(line)["answer"] for line in (tmp_path / "two" / "qwen2_vl_tiny" / "vcr_qar.predictions.jsonl").open()]
    assert all(len(options) == 4 and len(set(options)) == 4 for options in scores)  # real log-likelihoods
