"""The image-level baseline: GPT4RoI without its region module, seeing regions only through a renderer.

Same CLIP tower, projector and LLM as GPT4RoI (built by the same factory from the same ``conf/architecture`` keys, so
with the same seed the shared parts start from identical weights); global image tokens only. A region reaches
the model the way :mod:`baselines.renderers` puts it: in words, as text coordinates, as a coloured box drawn
on the image, as a crop (alone or before the full image), or not at all (``blind``). Everything else —
conversation template, label masks, truncation, generation, scoring — is GPT4RoI's own code
(:class:`~gpt4roi.processing.GPT4RoIProcessor`, :mod:`gpt4roi.modeling.inference`), so the comparison
differs in the region pathway only.

* :class:`ImageLevelConfig` / :class:`ImageLevelForCausalLM`: a transformers model (``model_type``
  ``gpt4roi_image``) that takes ``pixel_values`` of shape ``(B, n, 3, S, S)``: ``n`` image spans per prompt,
  ``n = 0`` for ``blind``.
* :class:`ImageLevelProcessor`: renders the row, then GPT4RoI's processor does the rest; one ``<image>``
  becomes ``n`` image spans.
* :func:`build_image_model` (``conf/architecture/tiny_image*.yaml``) and :func:`image_level_bundle` (the training
  harness's ``model_factory``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionModel, LlamaForCausalLM

from baselines.renderers import RegionRenderer, renderer_from_config
from gpt4roi.modeling.configuration_gpt4roi import GPT4RoIConfig
from gpt4roi.modeling.factory import UNSET, build_model, plain_config, torch_dtype
from gpt4roi.modeling.modeling_gpt4roi import GPT4RoIForCausalLM, GPT4RoIPreTrainedModel
from gpt4roi.processing import PROCESSOR_FILE, GPT4RoIProcessor, load_image
from gpt4roi.tokenizer import IMAGE_END_TOKEN, IMAGE_PATCH_TOKEN, IMAGE_START_TOKEN
from gpt4roi.train.bundle import RUNTIME_KEYS, Bundle

IMAGE_GROUPS = ("vision", "projector", "llm")


class ImageLevelConfig(GPT4RoIConfig):
    """GPT4RoI's configuration; the region-module fields are carried but unused."""

    model_type = "gpt4roi_image"


class ImageLevelForCausalLM(GPT4RoIForCausalLM):
    """Vision tower + projector + LLM: image tokens at ``<im_patch>``, no ``<roi>``.

    Reuses GPT4RoI's forward, generation hooks and embedding accessors; replaces the multimodal splice.
    """

    config_class = ImageLevelConfig

    def __init__(self, config: ImageLevelConfig):
        GPT4RoIPreTrainedModel.__init__(self, config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.projector = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()

    def module_groups(self) -> dict[str, nn.Module]:
        return {"vision": self.vision_tower, "projector": self.projector, "llm": self.language_model}

    def set_trainable(self, groups: Sequence[str]) -> dict[str, int]:
        """As GPT4RoI's, without ``region_module`` (asking for it is an error, not a silent no-op)."""
        if "region_module" in groups:
            raise ValueError(f"the image-level baseline has no region_module to train; choose from {IMAGE_GROUPS} "
                             "(stage 1 of a baseline trains the projector)")
        return super().set_trainable(groups)

    def splice(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor, pixel_values: torch.Tensor,
               boxes: list[torch.Tensor] | None) -> torch.Tensor:
        """``inputs_embeds`` with the projected patch tokens of image ``j`` in the ``j``-th image span."""
        if pixel_values.dim() == 4:
            pixel_values = pixel_values.unsqueeze(1)
        batch, images = pixel_values.shape[:2]
        if batch != input_ids.shape[0]:
            raise ValueError(f"image-level model: {batch} image groups for a batch of {input_ids.shape[0]} sequences")
        if bool((input_ids == self.config.roi_token_id).any()) or any(len(b) for b in boxes or []):
            raise ValueError("image-level model: got <roi> tokens or boxes; regions must be rendered into the text "
                             "or the image (baselines.renderers)")
        patch_mask = input_ids == self.config.image_patch_token_id
        expected = images * self.config.num_image_tokens
        counts = patch_mask.sum(dim=1).tolist()
        if any(count != expected for count in counts):
            raise ValueError(f"image-level model: image patch tokens per sample {counts}, expected {expected} "
                             f"({images} image(s) x {self.config.num_image_tokens})")
        if images == 0:
            return inputs_embeds
        hidden = self.vision_tower(pixel_values.flatten(0, 1), output_hidden_states=True).hidden_states
        tokens = self.projector(hidden[self.config.vision_feature_layer][:, 1:]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(patch_mask.unsqueeze(-1), tokens.reshape(-1, tokens.shape[-1]))


AutoConfig.register(ImageLevelConfig.model_type, ImageLevelConfig, exist_ok=True)
AutoModelForCausalLM.register(ImageLevelConfig, ImageLevelForCausalLM, exist_ok=True)


class ImageLevelProcessor(GPT4RoIProcessor):
    """GPT4RoI's processor behind a region renderer: ``<image>`` becomes one span per rendered image."""

    def __init__(self, tokenizer, image_size: int, num_image_tokens: int, *,
                 renderer: Mapping[str, Any] | str | RegionRenderer = "image_words", **settings: Any):
        super().__init__(tokenizer, image_size, num_image_tokens, **settings)
        self.renderer = renderer if isinstance(renderer, RegionRenderer) else renderer_from_config(renderer)
        span = IMAGE_START_TOKEN + IMAGE_PATCH_TOKEN * self.num_image_tokens + IMAGE_END_TOKEN
        self.image_span = span * self.renderer.num_images

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "renderer": asdict(self.renderer)}

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``(n, 3, S, S)`` for the rendered images (``n`` may be 0)."""
        if not images:
            return torch.zeros((0, 3, self.image_size, self.image_size))
        return torch.stack([super(ImageLevelProcessor, self).pixel_values(image) for image in images])

    def encode(self, row: Mapping[str, Any], image: Image.Image | None = None, generation: bool = False,
               continuation: str | None = None):
        """Render ``row`` (loading its image unless ``blind``), then encode it as GPT4RoI would."""
        if image is None and self.renderer.num_images:
            image = load_image(row, self.image_root)
        rendered = self.renderer(row, image)
        return super().encode(rendered.row, rendered.images, generation=generation, continuation=continuation)


def build_image_model(cfg: Any) -> tuple[ImageLevelForCausalLM, ImageLevelProcessor]:
    """``(model, processor)`` from a ``conf/architecture/tiny_image*.yaml`` config (GPT4RoI's keys plus ``renderer``).

    ``pretrained: <folder>`` loads a saved baseline (its renderer comes from the folder); otherwise GPT4RoI's
    factory builds the backbone and the region module is left out.
    """
    plain = plain_config(cfg)
    renderer = plain.pop("renderer", None)
    if plain.get("pretrained") not in UNSET:
        return load_image_model(plain["pretrained"], torch_dtype(plain.get("dtype")), image_root=plain.get("image_root"))
    base, base_processor = build_model(plain)
    config = ImageLevelConfig(**{k: v for k, v in base.config.to_dict().items() if k != "model_type"})
    with torch.device("meta"):
        model = ImageLevelForCausalLM(config)
    model.vision_tower, model.projector, model.language_model = base.vision_tower, base.projector, base.language_model
    processor = ImageLevelProcessor(base_processor.tokenizer, **base_processor.to_dict(),
                                    image_root=base_processor.image_root, renderer=renderer or "image_words")
    return model, processor


def save_image_model(model: ImageLevelForCausalLM, processor: ImageLevelProcessor, folder: str | Path) -> None:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def load_image_model(folder: str | Path, dtype: torch.dtype | str = torch.float32, image_root: str | None = None,
                     device_map: str | dict | None = None) -> tuple[ImageLevelForCausalLM, ImageLevelProcessor]:
    """A baseline written by :func:`save_image_model` (a training run's ``hf/`` folder); ``dtype`` / ``device_map``
    as :func:`gpt4roi.modeling.load_pretrained` takes them."""
    folder = Path(folder).expanduser()
    settings = folder / PROCESSOR_FILE
    if not (folder / "config.json").is_file() or "renderer" not in json.loads(settings.read_text() if
                                                                              settings.is_file() else "{}"):
        raise FileNotFoundError(f"{folder} is not a saved image-level baseline (needs config.json and a "
                                f"{PROCESSOR_FILE} with a renderer)")
    model = ImageLevelForCausalLM.from_pretrained(str(folder), dtype=dtype, device_map=device_map)
    overrides = {"image_root": image_root} if image_root not in UNSET else {}
    return model, ImageLevelProcessor.from_pretrained(folder, **overrides)


def image_level_bundle(model_cfg: Any, max_length: int) -> Bundle:
    """The training harness's ``model_factory`` for the baselines (``model_factory=baselines.image_level:...``)."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model, processor = build_image_model(model_cfg)
    processor.max_length = max_length
    identity = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    for key in RUNTIME_KEYS:
        identity.pop(key, None)
    return Bundle(model=model, encode=processor.encode, collate=processor.collate, identity=identity,
                  layer_classes=(LlamaDecoderLayer,),
                  export=lambda folder: save_image_model(model, processor, folder))
