"""The parameter-name table from the official GPT4RoI code (jshilong/GPT4RoI) to ``GPT4RoIForCausalLM``.

Official model: ``SPILlavaMPTForCausalLM`` (``gpt4roi/models/spi_llava.py``) = LLaVA v0's
``LlavaLlamaForCausalLM`` (``llava/model/llava.py``: ``model.*`` Llama, ``model.mm_projector``, the CLIP tower
in ``model.vision_tower``) + ``model.spi_module`` = ``MLVLROIQueryModule`` (``gpt4roi/models/layers.py``:
``mlvl_fuse`` = ``MLVLFuseModule``, ``roi_align`` = ``MlvlRoIExtractor``). Every entry is written out below as a
pattern with ``{layer}`` / ``{level}`` / ``{round}`` slots; :func:`name_table` expands it for one model size,
so the table is explicit name by name and a name outside it is an error, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Llama decoder layer: the official names are Hugging Face Llama's, under ``model.`` (LLaVA's ``self.model``).
LLAMA_LAYER = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
]

#: CLIP encoder layer of the vision tower.
CLIP_LAYER = [
    f"{module}.{kind}"
    for module in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                   "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2")
    for kind in ("weight", "bias")
]

VISION = "model.vision_tower.vision_model."
SPI = "model.spi_module."

#: (official pattern, our pattern, slot): the slot says which count expands the pattern (None: once).
TABLE: list[tuple[str, str, str | None]] = [
    # Llama
    ("model.embed_tokens.weight", "language_model.model.embed_tokens.weight", None),
    *[(f"model.layers.{{layer}}.{s}", f"language_model.model.layers.{{layer}}.{s}", "llm_layers") for s in LLAMA_LAYER],
    ("model.norm.weight", "language_model.model.norm.weight", None),
    ("lm_head.weight", "language_model.lm_head.weight", None),
    # LLaVA's projector of the global image tokens
    ("model.mm_projector.weight", "projector.weight", None),
    ("model.mm_projector.bias", "projector.bias", None),
    # CLIP vision tower
    (VISION + "embeddings.class_embedding", "vision_tower.embeddings.class_embedding", None),
    (VISION + "embeddings.patch_embedding.weight", "vision_tower.embeddings.patch_embedding.weight", None),
    (VISION + "embeddings.position_embedding.weight",
     "vision_tower.embeddings.position_embedding.weight", None),
    (VISION + "pre_layrnorm.weight", "vision_tower.pre_layrnorm.weight", None),
    (VISION + "pre_layrnorm.bias", "vision_tower.pre_layrnorm.bias", None),
    *[(VISION + f"encoder.layers.{{layer}}.{s}", f"vision_tower.encoder.layers.{{layer}}.{s}",
       "vision_layers") for s in CLIP_LAYER],
    (VISION + "post_layernorm.weight", "vision_tower.post_layernorm.weight", None),
    (VISION + "post_layernorm.bias", "vision_tower.post_layernorm.bias", None),
    # MLVLFuseModule: per-level 1x1 input conv; ConvModule(conv 3x3 no bias, GroupNorm 'gn', ReLU) per round
    (SPI + "mlvl_fuse.input_conv.{level}.weight", "region_module.fusion.input_convs.{level}.weight", "levels"),
    (SPI + "mlvl_fuse.input_conv.{level}.bias", "region_module.fusion.input_convs.{level}.bias", "levels"),
    (SPI + "mlvl_fuse.fuse_convs.{round}.conv.weight", "region_module.fusion.rounds.{round}.0.weight", "rounds"),
    (SPI + "mlvl_fuse.fuse_convs.{round}.gn.weight", "region_module.fusion.rounds.{round}.1.weight", "rounds"),
    (SPI + "mlvl_fuse.fuse_convs.{round}.gn.bias", "region_module.fusion.rounds.{round}.1.bias", "rounds"),
    # MlvlRoIExtractor: per-level 3x3 conv after RoIAlign, flatten linear, box embedding, up-projection
    (SPI + "roi_align.pconvs.{level}.weight", "region_module.level_convs.{level}.weight", "levels"),
    (SPI + "roi_align.pconvs.{level}.bias", "region_module.level_convs.{level}.bias", "levels"),
    (SPI + "roi_align.flatten_linear.weight", "region_module.flatten_proj.weight", None),
    (SPI + "roi_align.flatten_linear.bias", "region_module.flatten_proj.bias", None),
    *[(SPI + f"roi_align.pos_embedd.{index}.{kind}", f"region_module.box_mlp.{index}.{kind}", None)
      for index in (0, 2, 3, 5) for kind in ("weight", "bias")],  # Linear, ReLU, LayerNorm, Linear, ReLU, LayerNorm
    (SPI + "roi_align.updims.weight", "region_module.output_proj.weight", None),
    (SPI + "roi_align.updims.bias", "region_module.output_proj.bias", None),
]

#: Buffers old transformers versions saved and ours recompute (RoPE frequencies, CLIP position ids).
IGNORED: list[tuple[str, str | None]] = [
    ("model.layers.{layer}.self_attn.rotary_emb.inv_freq", "llm_layers"),
    (VISION + "embeddings.position_ids", None),
]


@dataclass(frozen=True)
class Counts:
    """How many of each repeated block the checkpoint has."""

    llm_layers: int
    vision_layers: int
    levels: int
    rounds: int


def _expand(pattern: str, slot: str | None, counts: Counts) -> list[str]:
    if slot is None:
        return [pattern]
    key = {"llm_layers": "layer", "vision_layers": "layer", "levels": "level", "rounds": "round"}[slot]
    return [pattern.replace("{" + key + "}", str(i)) for i in range(getattr(counts, slot))]


def name_table(counts: Counts) -> dict[str, str]:
    """Every official parameter name of a model of these counts -> our name (one entry per tensor)."""
    table: dict[str, str] = {}
    for official, ours, slot in TABLE:
        table.update(zip(_expand(official, slot, counts), _expand(ours, slot, counts), strict=True))
    return table


def ignored_names(counts: Counts) -> set[str]:
    """Official buffer names that are dropped on purpose (our model recomputes them)."""
    return {name for pattern, slot in IGNORED for name in _expand(pattern, slot, counts)}


def counts_of(names: set[str] | list[str]) -> Counts:
    """The block counts a checkpoint's names imply (the largest index present + 1 per slot)."""

    def count(prefix: str) -> int:
        indices = {int(name[len(prefix):].split(".")[0]) for name in names if name.startswith(prefix)}
        return max(indices) + 1 if indices else 0

    return Counts(
        llm_layers=count("model.layers."),
        vision_layers=count(VISION + "encoder.layers."),
        levels=count(SPI + "mlvl_fuse.input_conv."),
        rounds=count(SPI + "mlvl_fuse.fuse_convs."),
    )
