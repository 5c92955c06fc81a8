"""Reading Hugging Face checkpoint folders (safetensors or PyTorch ``.bin``, one file or sharded) and applying
GPT4RoI's released delta to its base LLaMA.

The released GPT4RoI-7B is a delta (``scripts/apply_delta.py`` of jshilong/GPT4RoI): for every name the base
LLaMA also has, the real weight is ``delta + base`` computed in the delta's dtype (its script loads both in
float16 and adds in place); the enlarged ``embed_tokens`` / ``lm_head`` get the base added to their first
rows; names the base lacks (projector, region module, vision tower) are taken as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder, in shard order; an error naming what was looked for."""
    folder = Path(folder).expanduser()
    for index_name in INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [name for name in shards if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(f"{index}: shard(s) {missing} are missing from {folder}")
            return [folder / name for name in shards]
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(f"{folder}: no checkpoint weights ({', '.join(INDEX_FILES + WEIGHT_FILES)})")


def load_shard(path: Path) -> dict[str, torch.Tensor]:
    """One weight file; ``.bin`` files are read with ``weights_only`` (tensors only, no code runs)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def iter_shards(folder: str | Path) -> Iterator[dict[str, torch.Tensor]]:
    """The folder's state dict shard by shard (a 7B base need not sit in memory next to the delta twice)."""
    for path in weight_files(folder):
        yield load_shard(path)


def read_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The whole state dict of a checkpoint folder."""
    state: dict[str, torch.Tensor] = {}
    for shard in iter_shards(folder):
        state.update(shard)
    return state


def apply_delta(delta: dict[str, torch.Tensor], base_folder: str | Path,
                delta_only: tuple[str, ...] = ("model.mm_projector.", "model.spi_module.", "model.vision_tower.")
                ) -> dict[str, torch.Tensor]:
    """``delta`` with the base checkpoint added in place, as the official ``apply_delta.py`` does.

    A base name that the delta lacks, a delta name outside ``delta_only`` prefixes that the base lacks, or a
    shape that differs other than by added token rows, is an error listing every such name.
    """
    seen: set[str] = set()
    problems: list[str] = []
    for shard in iter_shards(base_folder):
        for name, base in shard.items():
            if name.endswith("rotary_emb.inv_freq"):
                continue  # a recomputed buffer some LLaMA conversions saved
            target = delta.get(name)
            if target is None:
                problems.append(f"base weight {name} is not in the delta")
                continue
            seen.add(name)
            base = base.to(target.dtype)
            if target.shape == base.shape:
                target += base
            elif name in ("model.embed_tokens.weight", "lm_head.weight") and target.shape[1:] == base.shape[1:] \
                    and target.shape[0] >= base.shape[0]:
                target[: base.shape[0]] += base
            else:
                problems.append(f"{name}: delta {tuple(target.shape)} vs base {tuple(base.shape)}")
    unmatched = sorted(name for name in delta if name not in seen and not name.startswith(delta_only)
                       and not name.endswith("rotary_emb.inv_freq"))
    problems += [f"delta weight {name} has no base weight" for name in unmatched]
    if problems:
        raise ValueError(f"applying the delta over {base_folder}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return delta
