"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically, keep-last-k.

Layout of ``<out>/checkpoints/step-NNNNNNN/``::

    model.safetensors        full model state (all weights, so a checkpoint is usable on its own)
    optimizer.safetensors    optimiser tensors, keyed ``<param name>/<state name>``
    rng-rank<R>.safetensors  each rank's torch (CPU, CUDA) and Python RNG states
    state.json               step, data position, optimiser hyper-parameters, model and corpus identity

No pickle is written or read. The folder is assembled under ``step-NNNNNNN.tmp`` and renamed when complete,
so a run killed while saving leaves the previous checkpoint as the latest one. A checkpoint damaged later (a
truncated copy, a full disk, garbage in a file) is found by :func:`problem`, which reads every file's header
and ``state.json`` without loading a tensor; :func:`newest_valid` lets resume fall back past such folders.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from . import distributed as dist_utils

STEP_DIR = re.compile(r"^step-(\d{7})$")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class CheckpointError(ValueError):
    """A checkpoint that does not fit this run (another model config, another world size, missing files)."""


def step_dirs(checkpoints: Path) -> list[Path]:
    """Complete checkpoint folders in step order (temporary folders of an interrupted save are ignored)."""
    if not checkpoints.is_dir():
        return []
    found = [path for path in checkpoints.iterdir() if STEP_DIR.match(path.name) and (path / "state.json").is_file()]
    return sorted(found, key=lambda path: int(STEP_DIR.match(path.name)[1]))


# state.json keys and their types: every checkpoint's, and those only a resumable step checkpoint has
WEIGHTS_STATE = {"model": dict}
FULL_STATE = {**WEIGHTS_STATE, "step": int, "samples": int, "tokens": int, "plan": dict, "world_size": int, "param_groups": list}


def _tensor_file_problem(path: Path, metadata: tuple[str, ...] = ()) -> str | None:
    """Why the safetensors file ``path`` cannot be read (missing, truncated, not safetensors), or None.

    safetensors checks that the header parses and that its tensors exactly cover the file, so a truncated or
    padded file is caught here, from the header alone.
    """
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with safe_open(path, "pt") as handle:
            found = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        return f"{path.name} is truncated or not a safetensors file ({exc})"
    absent = [key for key in metadata if key not in found]
    return f"{path.name} lacks the metadata {', '.join(absent)}" if absent else None


def _state_problem(folder: Path, expected: dict[str, type]) -> tuple[dict[str, Any], str | None]:
    """``state.json`` and why it cannot be used (unreadable, not a JSON object, keys missing or mistyped)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, "state.json is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"state.json is not readable JSON ({exc})"
    if not isinstance(state, dict):
        return {}, f"state.json holds a {type(state).__name__}, not an object"
    wrong = [f"{key} ({kind.__name__})" for key, kind in expected.items()
             if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    return state, f"state.json lacks or mistypes {', '.join(wrong)}" if wrong else None


def problem(folder: Path, *, full: bool) -> str | None:
    """Why ``folder`` cannot be loaded — weights only, or with ``full`` everything resume needs — or None."""
    state, found = _state_problem(folder, FULL_STATE if full else WEIGHTS_STATE)
    if found:
        return found
    named = STEP_DIR.match(folder.name)
    if named and "step" in state and int(named[1]) != state["step"]:
        return f"state.json says step {state['step']}, the folder's name step {int(named[1])}"
    files: list[tuple[str, tuple[str, ...]]] = [("model.safetensors", ())]
    if full:
        files.append(("optimizer.safetensors", ()))
        files += [(f"rng-rank{rank}.safetensors", ("python_version", "python_gauss"))
                  for rank in range(state["world_size"])]
    for name, metadata in files:
        if found := _tensor_file_problem(folder / name, metadata):
            return found
    return None


def newest_valid(folders: list[Path], *, full: bool) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest of ``folders`` (oldest first) that :func:`problem` accepts, and the newer ones it refused,
    each with the reason."""
    skipped = []
    for folder in reversed(folders):
        found = problem(folder, full=full)
        if found is None:
            return folder, skipped
        skipped.append((folder, found))
    return None, skipped


def describe_skipped(skipped: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{folder}: {why}" for folder, why in skipped)


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint to ``<name>.invalid`` (numbered when taken): out of the step order, so
    neither pruning nor a later save at its step deletes it, and kept for a look."""
    target = folder.with_name(f"{folder.name}.invalid")
    number = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}.invalid{number}")
        number += 1
    folder.rename(target)
    return target


def resolve(path: str | Path) -> Path:
    """A checkpoint folder from a step folder, a ``final`` folder, or a run folder (its newest loadable
    checkpoint; damaged newer ones are named on stderr and passed over)."""
    path = Path(path).expanduser()
    if (path / "state.json").is_file():
        if found := problem(path, full=False):
            raise CheckpointError(f"checkpoint {path} cannot be loaded: {found}")
        return path
    candidates = [*step_dirs(path / "checkpoints"), *([path / "final"] if (path / "final").is_dir() else [])]
    chosen, skipped = newest_valid(candidates, full=False)
    if skipped:
        print(f"skipped damaged checkpoint(s): {describe_skipped(skipped)}", file=sys.stderr)
    if chosen is not None:
        return chosen
    if skipped:
        raise CheckpointError(f"{path} holds no loadable checkpoint: {describe_skipped(skipped)}")
    raise CheckpointError(f"{path} holds no checkpoint (expected state.json in it, in {path}/final, or a "
                          f"{path}/checkpoints/step-NNNNNNN folder)")


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with tied ones copied: safetensors refuses two names on one storage."""
    seen: set[int] = set()
    result = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        result[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return result


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    version, state, gauss = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "python": torch.tensor(state, dtype=torch.int64)}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    return tensors, {"python_version": str(version), "python_gauss": json.dumps(gauss)}


def _set_rng_state(path: Path) -> None:
    tensors = load_file(path)
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    state = tuple(int(v) for v in tensors["python"].tolist())
    random.setstate((int(meta["python_version"]), state, json.loads(meta["python_gauss"])))


def _flatten_optimizer(optim: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors = {f"{param}/{key}": value for param, state in optim["state"].items()
               for key, value in state.items() if isinstance(value, torch.Tensor)}
    groups = [{key: list(value) if isinstance(value, tuple) else value for key, value in group.items()}
              for group in optim["param_groups"]]
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        param, name = key.rsplit("/", 1)
        state.setdefault(param, {})[name] = value
    groups = [{key: tuple(value) if key == "betas" else value for key, value in group.items()} for group in groups]
    return {"state": state, "param_groups": groups}


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
         keep_last: int) -> Path:
    """Write checkpoint ``step-<state['step']>`` under ``folder`` on every rank's behalf; prune to ``keep_last``."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=FULL)  # collective under FSDP
    final = folder / f"step-{state['step']:07d}"
    tmp = folder / f"{final.name}.tmp"
    if dist_utils.rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist_utils.barrier()
    rng, rng_meta = _rng_state()
    save_file(rng, tmp / f"rng-rank{dist_utils.rank()}.safetensors", metadata=rng_meta)
    if dist_utils.rank() == 0:
        save_file(_unshared(model_sd), tmp / "model.safetensors")
        optim_tensors, groups = _flatten_optimizer(optim_sd)
        save_file(_unshared(optim_tensors), tmp / "optimizer.safetensors")
        payload = dict(state, world_size=dist_utils.world_size(), param_groups=groups)
        (tmp / "state.json").write_text(json.dumps(payload, indent=1, sort_keys=True))
    dist_utils.barrier()
    if dist_utils.rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in step_dirs(folder)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist_utils.barrier()
    return final


def save_weights(folder: Path, model: torch.nn.Module, state: dict[str, Any]) -> Path:
    """The final weights (``model.safetensors`` + ``state.json``), usable with ``init_from``."""
    model_sd = get_state_dict(model, [], options=FULL)[0]
    if dist_utils.rank() == 0:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_unshared(model_sd), tmp / "model.safetensors")
        (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    dist_utils.barrier()
    return folder


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


def check_model(folder: Path, identity: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse a checkpoint whose weights do not fit ``model`` (names and shapes), naming both model configs."""
    with safe_open(folder / "model.safetensors", "pt") as handle:
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    expected = {name: tuple(tensor.shape) for name, tensor in
                get_state_dict(model, [], options=StateDictOptions(full_state_dict=False))[0].items()}
    if dist_utils.world_size() == 1:  # sharded shapes differ under FSDP; names are checked there
        wrong = sorted(name for name in shapes.keys() & expected.keys() if shapes[name] != expected[name])
    else:
        wrong = []
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if wrong or missing or unexpected:
        theirs = read_state(folder).get("model", "<unknown>")
        raise CheckpointError(
            f"checkpoint {folder} was written for another model config ({json.dumps(theirs, sort_keys=True)}); "
            f"this run's model is {json.dumps(identity, sort_keys=True)}. Mismatched shapes: {wrong[:5]}, "
            f"missing: {missing[:5]}, unexpected: {unexpected[:5]}")


def load_weights(folder: Path, model: torch.nn.Module, identity: dict[str, Any]) -> None:
    """Weights only (``init_from``): the optimiser, schedule and data position start fresh."""
    check_model(folder, identity, model)
    set_state_dict(model, [], model_state_dict=load_file(folder / "model.safetensors"), optim_state_dict={},
                   options=StateDictOptions(full_state_dict=True))


def load_full(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              identity: dict[str, Any]) -> dict[str, Any]:
    """Everything (``resume=true``): weights, optimiser, this rank's RNG; returns ``state.json``."""
    state = read_state(folder)
    if state.get("model") != identity:
        raise CheckpointError(f"checkpoint {folder} was written for model config "
                              f"{json.dumps(state.get('model'), sort_keys=True)}, not this run's "
                              f"{json.dumps(identity, sort_keys=True)}; resume needs the same model config")
    if state["world_size"] != dist_utils.world_size():
        raise CheckpointError(f"checkpoint {folder} was written by {state['world_size']} process(es); resume "
                              f"it with the same number (this run has {dist_utils.world_size()})")
    check_model(folder, identity, model)
    optim = _unflatten_optimizer(load_file(folder / "optimizer.safetensors"), state["param_groups"])
    set_state_dict(model, optimizer, model_state_dict=load_file(folder / "model.safetensors"),
                   optim_state_dict=optim, options=StateDictOptions(full_state_dict=True))
    _set_rng_state(folder / f"rng-rank{dist_utils.rank()}.safetensors")
    return state
