"""Two CPU processes under torchrun (gloo; DDP or FSDP) optimise exactly what one process does with the same batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_train_loop import TESTS, corpus, losses, overrides, run  # noqa: F401  (corpus is a fixture)

from gpt4roi.train.metrics import read_metrics


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process_with_the_same_global_batch(corpus, tmp_path, strategy):  # noqa: F811
    common = ("trainer.max_steps=8", "+architecture.standin_dropout=0", f"trainer.strategy={strategy}", "trainer.save_every=4")
    single = losses(run(corpus, tmp_path / "single", *common))
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={29517 + len(strategy)}",
               "-m", "gpt4roi.train", *overrides(corpus, out, *common, "trainer.per_device_batch_size=2")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert losses(records) == pytest.approx(single, rel=1e-5)
    state = (out / "checkpoints" / "step-0000008" / "state.json").read_text()
    assert '"world_size": 2' in state
    assert (out / "checkpoints" / "step-0000008" / "rng-rank1.safetensors").is_file()
