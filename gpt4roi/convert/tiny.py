"""A tiny checkpoint laid out as jshilong/GPT4RoI releases GPT4RoI-7B, for tests and the leaderboard run.

The official parameter names and shapes (LLaVA v0's ``model.*`` Llama, ``model.mm_projector``,
``model.spi_module`` = ``MLVLROIQueryModule`` of layers.py, the CLIP tower kept in its own folder) at tiny
widths, with random weights: a delta folder over a base LLaMA folder (sharded ``.bin``, as released), the base,
and the CLIP folder. :func:`write_released` writes them; ``gpt4roi convert`` turns them into our model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from ..tokenizer import train_tiny_tokenizer
from .names import SPI
from .names import VISION as TOWER

#: The tiny CLIP tower: 10 layers, so that ``select_layer = -2`` and every third layer below give 4 levels.
VISION = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=10,
                          num_attention_heads=2)
LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 4, "max_position_embeddings": 512, "rms_norm_eps": 1e-6}
#: The region module's widths: fused channels, RoIAlign output side, region and box-embedding widths,
#: GroupNorm groups (``gpt4roi convert region_norm_groups=``), fuse rounds and pyramid levels.
EMBED, ROI_OUT, REGION_HIDDEN, BOX_HIDDEN, GROUPS, ROUNDS, LEVELS = 32, 4, 48, 16, 8, 5, 4
#: The tokens GPT4RoI adds to LLaMA's vocabulary (the delta's embedding rows beyond the base's).
ADDED = ["<im_patch>", "<bbox>", "<point>", "<im_start>", "<im_end>"]
#: The base LLaMA's part of the state dict (what the delta is taken against).
BASE_PARTS = ("model.layers.", "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")


def official_tokenizer():
    """Our tiny BPE with GPT4RoI's added tokens (``<im_*>`` it already has; ``<bbox>``, ``<point>`` added)."""
    tokenizer = train_tiny_tokenizer(vocab_size=400)
    tokenizer.add_tokens(["<bbox>", "<point>"], special_tokens=True)
    return tokenizer


def spi_shapes() -> dict[str, tuple[int, ...]]:
    """MLVLROIQueryModule's parameter names and shapes (layers.py), at tiny widths."""
    shapes = {}
    for level in range(LEVELS):
        shapes[f"mlvl_fuse.input_conv.{level}.weight"] = (EMBED, VISION.hidden_size + 2, 1, 1)
        shapes[f"mlvl_fuse.input_conv.{level}.bias"] = (EMBED,)
        shapes[f"roi_align.pconvs.{level}.weight"] = (EMBED, EMBED, 3, 3)
        shapes[f"roi_align.pconvs.{level}.bias"] = (EMBED,)
    for index in range(ROUNDS):
        shapes[f"mlvl_fuse.fuse_convs.{index}.conv.weight"] = (EMBED, EMBED, 3, 3)
        shapes[f"mlvl_fuse.fuse_convs.{index}.gn.weight"] = (EMBED,)
        shapes[f"mlvl_fuse.fuse_convs.{index}.gn.bias"] = (EMBED,)
    shapes.update({
        "roi_align.pos_embedd.0.weight": (BOX_HIDDEN, 4), "roi_align.pos_embedd.0.bias": (BOX_HIDDEN,),
        "roi_align.pos_embedd.2.weight": (BOX_HIDDEN,), "roi_align.pos_embedd.2.bias": (BOX_HIDDEN,),
        "roi_align.pos_embedd.3.weight": (REGION_HIDDEN, BOX_HIDDEN), "roi_align.pos_embedd.3.bias": (REGION_HIDDEN,),
        "roi_align.pos_embedd.5.weight": (REGION_HIDDEN,), "roi_align.pos_embedd.5.bias": (REGION_HIDDEN,),
        "roi_align.flatten_linear.weight": (REGION_HIDDEN, EMBED * ROI_OUT * ROI_OUT),
        "roi_align.flatten_linear.bias": (REGION_HIDDEN,),
        "roi_align.updims.weight": (LLM["hidden_size"], REGION_HIDDEN), "roi_align.updims.bias": (LLM["hidden_size"],),
    })
    return shapes


def official_state(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A merged official state dict: Llama names under ``model.``, the tower, ``mm_projector``, ``spi_module``,
    and the RoPE buffers old transformers saved."""
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **LLM))
    state = dict(llama.state_dict())
    state.update({TOWER + k: v for k, v in CLIPVisionModel(VISION).state_dict().items()})
    state["model.mm_projector.weight"] = torch.randn(LLM["hidden_size"], VISION.hidden_size) * 0.1
    state["model.mm_projector.bias"] = torch.randn(LLM["hidden_size"]) * 0.1
    for name, shape in spi_shapes().items():
        state[SPI + name] = torch.randn(shape) * (0.1 if len(shape) > 1 else 1.0)
    for layer in range(LLM["num_hidden_layers"]):
        state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    state["model.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    return state


def official_config(vocab: int) -> dict:
    """The released ``config.json`` (LLaVA v0's ``LlavaConfig``) at tiny size."""
    return {"model_type": "llava", "architectures": ["SPILlavaMPTForCausalLM"], "vocab_size": vocab,
            "mm_vision_select_layer": -2, "mm_use_im_start_end": True, "mm_hidden_size": VISION.hidden_size,
            "use_mm_proj": True, "mm_vision_tower": "openai/clip-vit-large-patch14", **LLM}


def write_folder(folder: Path, state: dict[str, torch.Tensor], config: dict | None, tokenizer=None, shards: int = 1,
                 binary: bool = False) -> Path:
    """A Hugging Face checkpoint folder (``.bin`` or safetensors, optionally sharded with an index)."""
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    names = sorted(state)
    suffix = "bin" if binary else "safetensors"
    stem = "pytorch_model" if binary else "model"
    weight_map = {}
    for shard in range(shards):
        part = {n: state[n].contiguous() for n in names[shard::shards]}
        file = f"{stem}-{shard + 1:05d}-of-{shards:05d}.{suffix}" if shards > 1 else f"{stem}.{suffix}"
        if binary:
            torch.save(part, folder / file)
        else:
            save_file(part, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
    if shards > 1:
        (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def clip_folder(folder: Path) -> Path:
    """A CLIP folder with only its ``config.json`` (a ``CLIPModel`` config holding the tiny vision config)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": VISION.to_dict()}))
    return folder


@dataclass
class Released:
    """What :func:`write_released` wrote: the folders ``gpt4roi convert`` reads, and the merged weights."""

    delta: Path
    base: Path
    clip: Path
    merged: dict[str, torch.Tensor]  # base + delta under the official names (what the conversion must hold)
    tokenizer: object


def write_released(root: Path, seed: int = 0) -> Released:
    """A delta checkpoint over a base LLaMA (as released: sharded ``.bin``, fp32 here, the tower in its own CLIP
    folder) under ``root``. The base has no rows for the added tokens; the delta's rows there are the weights."""
    tokenizer = official_tokenizer()
    vocab = len(tokenizer)
    merged = official_state(vocab, seed)
    base = {k: v for k, v in official_state(vocab - len(ADDED), seed=seed + 1).items() if k.startswith(BASE_PARTS)}
    delta = {k: v.clone() for k, v in merged.items()}
    for name, value in base.items():
        if not name.endswith("inv_freq"):
            delta[name][: value.shape[0]] -= value
    expected = {k: v.clone() for k, v in delta.items()}  # merged again from the delta, in its float arithmetic
    for name, value in base.items():
        if not name.endswith("inv_freq"):
            expected[name][: value.shape[0]] += value
    tower = {"vision_model." + k[len(TOWER):]: v for k, v in merged.items()
             if k.startswith(TOWER) and not k.endswith("position_ids")}
    return Released(
        delta=write_folder(root / "delta", {k: v for k, v in delta.items() if not k.startswith(TOWER)},
                           official_config(vocab), tokenizer, shards=2, binary=True),
        base=write_folder(root / "base", base, {"model_type": "llama"}),
        clip=write_folder(clip_folder(root / "clip"), tower, None),
        merged=expected, tokenizer=tokenizer)
