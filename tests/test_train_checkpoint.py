"""Damaged checkpoints: a truncated ``model.safetensors``, garbage ``optimizer.safetensors`` or ``state.json``.

``resume=true`` falls back to the newest checkpoint whose files all read, names the ones it skipped and why,
sets them aside (``<name>.invalid``) and then repeats the uninterrupted run's losses exactly; with no readable
checkpoint it stops naming each. ``init_from`` / the chat's run-folder loading pass over a damaged ``final``.
Runs use tests/test_train_loop.py's stand-in model and corpus (seconds each).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_train_loop import corpus, losses, overrides, run  # noqa: F401  (corpus is a fixture)

from gpt4roi.cli import main as cli_main
from gpt4roi.train import checkpoint
from gpt4roi.train.checkpoint import CheckpointError, step_dirs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ARGS = ("trainer.epochs=2", "trainer.save_every=5", "trainer.keep_last=3")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {  # file -> (how it is damaged, what the reason says)
    "model.safetensors": (truncate, "model.safetensors is truncated or not a safetensors file"),
    "optimizer.safetensors": (lambda p: p.write_bytes(os.urandom(3000)),
                              "optimizer.safetensors is truncated or not a safetensors file"),
    "state.json": (lambda p: p.write_text('{"step": 15, "samp'), "state.json is not readable JSON"),
    "rng-rank0.safetensors": (lambda p: p.unlink(), "rng-rank0.safetensors is missing"),
}


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory) -> tuple[Path, list[float]]:  # noqa: F811
    """A complete 24-step run with checkpoints 10, 15, 20 (and 24 pruned to keep three: 15, 20, 24)."""
    out = tmp_path_factory.mktemp("checkpoints") / "run"
    reference = losses(run(corpus, out, *ARGS))
    assert [p.name for p in step_dirs(out / "checkpoints")] == ["step-0000015", "step-0000020", "step-0000024"]
    return out, reference


def interrupted(finished: tuple[Path, list[float]], tmp_path: Path) -> Path:
    """A copy of the run as if it had died after step 20: checkpoints 15 and 20, metrics up to step 20."""
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    shutil.rmtree(out / "checkpoints" / "step-0000024")
    shutil.rmtree(out / "final")
    return out


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_each_damage_is_named_from_the_headers_alone(finished, tmp_path, name):
    folder = tmp_path / "step-0000020"
    shutil.copytree(finished[0] / "checkpoints" / "step-0000020", folder)
    assert checkpoint.problem(folder, full=True) is None
    damage, reason = DAMAGES[name]
    damage(folder / name)
    assert checkpoint.problem(folder, full=True).startswith(reason)


def test_state_json_of_the_wrong_shape_is_named(finished, tmp_path):
    folder = tmp_path / "step-0000020"
    shutil.copytree(finished[0] / "checkpoints" / "step-0000020", folder)
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps([state]))
    assert checkpoint.problem(folder, full=True) == "state.json holds a list, not an object"
    (folder / "state.json").write_text(json.dumps(dict(state, step="20", world_size=None)))
    assert checkpoint.problem(folder, full=True) == "state.json lacks or mistypes step (int), world_size (int)"
    (folder / "state.json").write_text(json.dumps(dict(state, step=15)))
    assert checkpoint.problem(folder, full=True) == "state.json says step 15, the folder's name step 20"


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_resume_falls_back_past_a_damaged_checkpoint_and_matches_the_reference(corpus, finished, tmp_path,  # noqa: F811
                                                                              capsys, name):
    out = interrupted(finished, tmp_path)
    latest = out / "checkpoints" / "step-0000020"
    damage, reason = DAMAGES[name]
    damage(latest / name)
    resumed = run(corpus, out, *ARGS, "resume=true")
    printed = capsys.readouterr().out
    assert f"resume: skipped {latest}: {reason}" in printed
    assert f"set aside as {latest}.invalid" in printed
    assert f"resume: resuming from {out / 'checkpoints' / 'step-0000015'}" in printed
    assert losses(resumed) == pytest.approx(finished[1], abs=1e-6) and len(resumed) == 24
    assert (out / "checkpoints" / "step-0000020.invalid" / name).exists() or name == "rng-rank0.safetensors"
    assert [p.name for p in step_dirs(out / "checkpoints")] == ["step-0000015", "step-0000020", "step-0000024"]


def test_resume_with_no_readable_checkpoint_stops_naming_each(corpus, finished, tmp_path, capsys):  # noqa: F811
    out = interrupted(finished, tmp_path)
    truncate(out / "checkpoints" / "step-0000020" / "model.safetensors")
    (out / "checkpoints" / "step-0000015" / "optimizer.safetensors").write_bytes(b"\0" * 100)
    assert cli_main(["train", *overrides(corpus, out, *ARGS, "resume=true")]) == 1
    error = capsys.readouterr().err
    assert f"resume: no checkpoint in {out / 'checkpoints'} can be loaded" in error
    assert f"{out / 'checkpoints' / 'step-0000020'}: model.safetensors is truncated" in error
    assert f"{out / 'checkpoints' / 'step-0000015'}: optimizer.safetensors is truncated" in error
    assert "Traceback" not in error
    assert [p.name for p in step_dirs(out / "checkpoints")] == ["step-0000015", "step-0000020"]  # nothing moved


def test_weights_loading_passes_over_a_damaged_final(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    truncate(out / "final" / "model.safetensors")
    assert checkpoint.resolve(out) == out / "checkpoints" / "step-0000024"
    assert f"{out / 'final'}: model.safetensors is truncated" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="model.safetensors is truncated"):
        checkpoint.resolve(out / "final")  # named directly: refused, not replaced
