"""Released GPT4RoI checkpoint (official names) -> our ``GPT4RoIForCausalLM`` ``save_pretrained`` folder.

Inputs, as jshilong/GPT4RoI releases them: the checkpoint folder (``config.json`` of LLaVA v0's
``LlavaConfig``, the weights, the tokenizer with its added ``<im_patch> <bbox> <point> <im_start> <im_end>``),
either already merged or a delta over LLaMA-7B (then ``base`` names the LLaMA folder); and the CLIP tower's
folder (``mm_vision_tower`` in the config, ``openai/clip-vit-large-patch14``), which supplies the tower's config and,
when the checkpoint does not hold the tower (LLaVA v0 keeps it out of the state dict), its weights.

The output loads with :func:`gpt4roi.modeling.load_pretrained` and writes prompts as GPT4RoI does:
``region{K} <bbox>`` and GPT4RoI's image resize (processor ``roi_token`` / ``resize`` settings).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import save_torch_state_dict
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig

from ..modeling.configuration_gpt4roi import GPT4RoIConfig, square_side
from ..modeling.modeling_gpt4roi import GPT4RoIForCausalLM
from ..processing import CLIP_MEAN, CLIP_STD, GPT4RoIProcessor
from ..tokenizer import IMAGE_END_TOKEN, IMAGE_PATCH_TOKEN, IMAGE_START_TOKEN
from .checkpoint import apply_delta, read_state_dict
from .names import SPI, VISION, counts_of, ignored_names, name_table

#: GPT4RoI's region placeholder (``add_spatial_token`` in spi_llava.py); ``<point>`` is added but never used.
OFFICIAL_ROI_TOKEN = "<bbox>"
#: ``MLVLFuseModule``'s GroupNorm groups (``num_groups=64`` in layers.py); the weights do not show it.
OFFICIAL_NORM_GROUPS = 64
#: ``MlvlRoIExtractor``'s RoIAlign (mmcv defaults: aligned) and sampling ratio.
OFFICIAL_ROI = {"roi_sampling_ratio": 2, "roi_aligned": True}
#: The vision tower's own weights in a CLIP folder (a CLIPModel's text tower and projections are not used).
CLIP_TOWER_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
LLAMA_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "rms_norm_eps", "max_position_embeddings", "hidden_act", "rope_theta")


class ConversionError(ValueError):
    """The checkpoint does not match the name table or our model's shapes; the message lists every problem."""


@dataclass
class Sources:
    """Where the pieces come from."""

    checkpoint: Path
    vision: Path
    base: Path | None = None


def official_feature_layers(select_layer: int, depth: int, levels: int) -> list[int]:
    """The CLIP ``hidden_states`` indices of the region levels, by spi_llava.py's rule:
    ``hidden_states[select::-3][::-1][-levels:]`` (14, 17, 20, 23 for ViT-L/14 with ``select = -2``)."""
    chosen = list(range(depth + 1))[select_layer::-3][::-1][-levels:]
    if len(chosen) != levels:
        raise ConversionError(f"a {depth}-layer vision tower gives only {len(chosen)} region levels; the checkpoint has {levels}")
    return chosen


def vision_config_and_weights(folder: Path) -> tuple[CLIPVisionConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """The CLIP tower's config, its ``vision_model.*`` weights under the official prefix, and image settings."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"vision tower folder {folder} has no config.json (give vision=<CLIP folder>)")
    raw = json.loads(config_file.read_text())
    config = CLIPVisionConfig(**raw.get("vision_config", raw))
    state = {}
    try:
        weights = read_state_dict(folder)
    except FileNotFoundError:
        weights = {}  # a config-only folder: the checkpoint must hold the tower
    for name, tensor in weights.items():
        name = name.removeprefix("vision_model.")  # CLIPModel and older CLIPVisionModel files; newer ones lack it
        if name.startswith(CLIP_TOWER_PARTS):
            state[VISION + name] = tensor
    settings = {}
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        pre = json.loads(preprocessor.read_text())
        settings = {"image_mean": pre.get("image_mean", CLIP_MEAN), "image_std": pre.get("image_std", CLIP_STD)}
    return config, state, settings


def region_settings(state: dict[str, torch.Tensor], vision: CLIPVisionConfig, select_layer: int,
                    norm_groups: int) -> dict[str, Any]:
    """Our region-module config read off the official weights' shapes and GPT4RoI's fixed choices."""
    counts = counts_of(set(state))
    try:
        embed = state[SPI + "mlvl_fuse.input_conv.0.weight"].shape[0]
        flat = state[SPI + "roi_align.flatten_linear.weight"]
        box_hidden = state[SPI + "roi_align.pos_embedd.0.weight"].shape[0]
    except KeyError as missing:
        raise ConversionError(f"checkpoint lacks the region module weight {missing}") from None
    out = math.isqrt(flat.shape[1] // embed)
    grid = square_side(vision.image_size) // square_side(vision.patch_size)
    return {
        "vision_feature_layer": select_layer,
        "region_feature_layers": official_feature_layers(select_layer, vision.num_hidden_layers, counts.levels),
        # MLVLROIQueryModule: the shallowest level at grid * 2**(L-1), halving level by level to the grid itself.
        "region_pyramid_sizes": [grid * 2 ** (counts.levels - 1 - level) for level in range(counts.levels)],
        "region_embed_dim": embed,
        "region_fusion_rounds": counts.rounds,
        "region_norm_groups": norm_groups,
        "roi_output_size": out,
        "region_hidden_size": flat.shape[0],
        "box_hidden_size": box_hidden,
        **OFFICIAL_ROI,
    }


def token_ids(tokenizer) -> dict[str, int]:
    """Our config's special-token ids from the official tokenizer; an error naming any token it lacks."""
    wanted = {"image_start_token_id": IMAGE_START_TOKEN, "image_patch_token_id": IMAGE_PATCH_TOKEN,
              "image_end_token_id": IMAGE_END_TOKEN, "roi_token_id": OFFICIAL_ROI_TOKEN}
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in wanted.items()}
    absent = [wanted[key] for key, index in ids.items() if index is None or index == tokenizer.unk_token_id]
    if absent:
        raise ConversionError(f"the checkpoint's tokenizer lacks GPT4RoI's tokens {absent}")
    return ids


def build_config(official: dict[str, Any], state: dict[str, torch.Tensor], vision: CLIPVisionConfig, tokenizer,
                 norm_groups: int) -> GPT4RoIConfig:
    """``GPT4RoIConfig`` from the official ``config.json``, the weights' shapes and the tokenizer."""
    if not official.get("mm_use_im_start_end", True):
        raise ConversionError("config.json: mm_use_im_start_end is false; GPT4RoI places regions only with <im_start>")
    rows = state["model.embed_tokens.weight"].shape[0]
    if len(tokenizer) > rows:
        raise ConversionError(f"the checkpoint's tokenizer has {len(tokenizer)} tokens but model.embed_tokens.weight "
                              f"has {rows} rows: tokenizer and weights are from different checkpoints")
    text = {key: official[key] for key in LLAMA_KEYS if key in official}
    text.update(vocab_size=rows, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    select = int(official.get("mm_vision_select_layer", -1))
    return GPT4RoIConfig(vision_config=vision, text_config=LlamaConfig(**text),
                         **region_settings(state, vision, select, norm_groups), **token_ids(tokenizer))


def map_names(state: dict[str, torch.Tensor], config: GPT4RoIConfig) -> dict[str, torch.Tensor]:
    """``state`` under our names, checked against our model's parameters: every missing, unexpected or
    misshapen tensor is listed in one :class:`ConversionError`."""
    counts = counts_of(set(state))
    table = name_table(counts)
    ignored = ignored_names(counts)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in GPT4RoIForCausalLM(config).state_dict().items()}
    problems = [f"unexpected official weight {name} (not in the name table)"
                for name in sorted(set(state) - set(table) - ignored)]
    problems += [f"missing official weight {name} (for {table[name]})" for name in sorted(set(table) - set(state))]
    mapped = {table[name]: tensor for name, tensor in state.items() if name in table}
    problems += [f"our parameter {name} has no official weight" for name in sorted(set(expected) - set(mapped))]
    problems += [f"{name}: the table maps to a name our model does not have" for name in sorted(set(mapped) - set(expected))]
    problems += [f"shape mismatch: {official} {tuple(state[official].shape)} -> {ours} expects {expected[ours]}"
                 for official, ours in table.items()
                 if official in state and ours in expected and tuple(state[official].shape) != expected[ours]]
    if problems:
        raise ConversionError(f"{len(problems)} problem(s) converting the checkpoint:\n  " + "\n  ".join(problems))
    return mapped


def convert(sources: Sources, out: str | Path, max_length: int = 2048, norm_groups: int = OFFICIAL_NORM_GROUPS,
            max_shard_size: str = "5GB") -> GPT4RoIConfig:
    """Write ``out`` (model + processor); returns the config. Tensors keep the checkpoint's dtype."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConversionError(f"{out} exists and is not empty; give a new folder (old shards would be mixed in)")
    official_file = sources.checkpoint / "config.json"
    if not official_file.is_file():
        raise FileNotFoundError(f"{sources.checkpoint} is not a GPT4RoI checkpoint folder (no config.json)")
    official = json.loads(official_file.read_text())
    state = read_state_dict(sources.checkpoint)
    if sources.base is not None:
        state = apply_delta(state, sources.base)
    vision, vision_state, image_settings = vision_config_and_weights(sources.vision)
    if not any(name.startswith(VISION) for name in state):
        if not vision_state:
            raise ConversionError(f"neither {sources.checkpoint} nor {sources.vision} holds the vision tower's weights")
        state.update(vision_state)
    tokenizer = AutoTokenizer.from_pretrained(str(sources.checkpoint))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    config = build_config(official, state, vision, tokenizer, norm_groups)
    mapped = map_names(state, config)
    config.dtype = next(iter(mapped.values())).dtype
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_torch_state_dict({name: t.contiguous() for name, t in mapped.items()}, out, max_shard_size=max_shard_size)
    processor = GPT4RoIProcessor(tokenizer, image_size=square_side(vision.image_size),
                                 num_image_tokens=config.num_image_tokens, max_length=max_length,
                                 roi_token=OFFICIAL_ROI_TOKEN, resize="clip_short_side", **image_settings)
    processor.save_pretrained(out)
    return config
