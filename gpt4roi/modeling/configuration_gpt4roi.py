"""``GPT4RoIConfig``: the vision tower, the LLM and the region module of GPT4RoI in one ``PreTrainedConfig``.

Defaults are the paper's 7B dimensions (arXiv 2307.03601 and its released code): CLIP ViT-L/14 at 224 px,
region features from the hidden states after layers 14, 17, 20 and 23 of 24 resized to a 128/64/32/16
pyramid (shallowest finest), five fusion rounds, RoIAlign 14x14 with sampling ratio 2 (aligned), a 1024-wide
region embedding, then the LLM width 4096.
"""

from __future__ import annotations

from transformers import AutoConfig, CLIPVisionConfig, LlamaConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

CLIP_VIT_L14_224 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}


class GPT4RoIConfig(PreTrainedConfig):
    """Configuration of :class:`~gpt4roi.modeling.modeling_gpt4roi.GPT4RoIForCausalLM`.

    Token ids (``image_patch_token_id`` etc.) are those the processor's tokenizer assigned to the special
    tokens; :func:`gpt4roi.modeling.factory.build_model` fills them in. ``region_feature_layers`` index CLIP's
    ``hidden_states`` tuple, whose entry 0 is the patch embedding, so 23 is the output of layer 23 of 24 — the
    same penultimate layer that ``vision_feature_layer=-2`` picks for the global image tokens.
    """

    model_type = "gpt4roi"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=dict(CLIP_VIT_L14_224)
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_feature_layer: int = -2
    region_feature_layers: list[int] | None = None
    region_pyramid_sizes: list[int] | None = None
    region_embed_dim: int = 1024
    region_fusion_rounds: int = 5
    region_norm_groups: int = 64
    roi_output_size: int = 14
    roi_sampling_ratio: int = 2
    roi_aligned: bool = True
    region_hidden_size: int = 1024
    box_hidden_size: int = 256
    image_start_token_id: int = -1
    image_patch_token_id: int = -1
    image_end_token_id: int = -1
    roi_token_id: int = -1
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.region_feature_layers is None:
            self.region_feature_layers = [14, 17, 20, 23]
        if self.region_pyramid_sizes is None:
            self.region_pyramid_sizes = [128, 64, 32, 16]
        self.region_feature_layers = list(self.region_feature_layers)
        self.region_pyramid_sizes = list(self.region_pyramid_sizes)
        self._check()

    def _check(self) -> None:
        """Fail at construction, with the offending values, rather than as a shape error in a forward pass."""
        layers, sizes = self.region_feature_layers, self.region_pyramid_sizes
        if len(layers) != len(sizes) or not layers:
            raise ValueError(
                f"GPT4RoIConfig: region_feature_layers {layers} and region_pyramid_sizes {sizes} must be non-empty "
                "and of equal length (one pyramid level per CLIP layer)"
            )
        depth = self.vision_config.num_hidden_layers
        if any(not 0 <= layer <= depth for layer in layers):
            raise ValueError(f"GPT4RoIConfig: region_feature_layers {layers} must lie in [0, {depth}] for this tower")
        if self.region_embed_dim % self.region_norm_groups:
            raise ValueError(
                f"GPT4RoIConfig: region_embed_dim {self.region_embed_dim} is not divisible by "
                f"region_norm_groups {self.region_norm_groups}"
            )
        if self.region_embed_dim < 4:
            raise ValueError("GPT4RoIConfig: region_embed_dim must be at least 4 (levels exchange quarters)")

    @property
    def num_image_tokens(self) -> int:
        """Patch tokens per image (CLS dropped): 256 for ViT-L/14 at 224 px."""
        return self.patch_grid**2

    @property
    def patch_grid(self) -> int:
        """Patches per side of the vision tower's input."""
        return square_side(self.vision_config.image_size) // square_side(self.vision_config.patch_size)


def square_side(value: int | list[int] | tuple[int, int]) -> int:
    """The side of a square CLIP size: CLIP configs may give sizes as ``(h, w)``, and GPT4RoI (its patch
    grid, its processor's resize) only takes square inputs, so a non-square size is an error here."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"GPT4RoI needs a square vision input, got {value}")
        return int(value[0])
    return int(value)


__all__ = ["GPT4RoIConfig", "CLIPVisionConfig", "LlamaConfig"]
