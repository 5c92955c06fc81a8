"""``GPT4RoIForCausalLM``: CLIP vision tower + projector + region module + Llama, as one transformers model.

The LLM reads ordinary token embeddings except at two kinds of placeholder, which the processor writes:
- the ``<im_patch>`` run inside ``<im_start> ... <im_end>`` gets the projected patch tokens of the image
  (CLIP's penultimate layer, CLS dropped), one per placeholder;
- every ``<roi>`` gets the region module's embedding of the next box of that sample, in order.

The splice runs only when ``pixel_values`` are given, i.e. on a training step or the prefill of
``generate()``; the cached decoding steps that follow see plain token ids (``generate`` drops
``pixel_values`` after the prefill, and :meth:`prepare_inputs_for_generation` drops ``boxes`` with them).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import CLIPVisionModel, GenerationMixin, LlamaForCausalLM, PreTrainedModel

from .configuration_gpt4roi import GPT4RoIConfig
from .region_module import RegionFeatureModule

FREEZE_GROUPS = ("vision", "projector", "region_module", "llm")


class GPT4RoIPreTrainedModel(PreTrainedModel):
    """Shared class attributes (config class, what may be split across devices, attention backends)."""

    config_class = GPT4RoIConfig
    config: GPT4RoIConfig
    base_model_prefix = "gpt4roi"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True


class GPT4RoIForCausalLM(GPT4RoIPreTrainedModel, GenerationMixin):
    """GPT4RoI with a language-modelling head (the head is the Llama's own ``lm_head``)."""

    def __init__(self, config: GPT4RoIConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.projector = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.region_module = RegionFeatureModule(config)
        self.language_model = LlamaForCausalLM(config.text_config)
        #: Compute each distinct picture and (picture, box) once per batch (:meth:`visual_features`); ``False``
        #: gives every sample its own computation (the reference the feature-reuse benchmark compares against).
        self.share_visual_features = True
        self.post_init()

    # --- embeddings (so that resize_token_embeddings and generate find them) -------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # --- training stages --------------------------------------------------------------------------------
    def module_groups(self) -> dict[str, nn.Module]:
        """The freezing groups named after GPT4RoI's training stages."""
        return {
            "vision": self.vision_tower,
            "projector": self.projector,
            "region_module": self.region_module,
            "llm": self.language_model,
        }

    def set_trainable(self, groups: Iterable[str]) -> dict[str, int]:
        """Train exactly ``groups`` (others frozen); returns the trainable parameter count per group.

        Stage 1 of the paper trains ``["region_module"]`` (the projector comes pretrained from LLaVA's alignment
        stage); stage 2 trains ``["region_module", "projector", "llm"]``; the vision tower stays frozen throughout.
        """
        wanted = set(groups)
        unknown = wanted - set(FREEZE_GROUPS)
        if unknown:
            raise ValueError(f"unknown freezing group(s) {sorted(unknown)}; choose from {list(FREEZE_GROUPS)}")
        counts = {}
        for name, module in self.module_groups().items():
            module.requires_grad_(name in wanted)
            counts[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return counts

    # --- the multimodal splice --------------------------------------------------------------------------
    def image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Projected global patch tokens ``(B, N, width)`` and the region module's per-layer patch tokens."""
        pixel_values = pixel_values.to(self.vision_tower.dtype)  # processors give float32; the tower may be bf16
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        global_tokens = self.projector(hidden[self.config.vision_feature_layer][:, 1:])
        return global_tokens, [hidden[layer][:, 1:] for layer in self.config.region_feature_layers]

    def visual_features(self, pixel_values: torch.Tensor, boxes: list[torch.Tensor]
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Projected image tokens ``(B, N, width)`` and each sample's region embeddings ``(n_i, width)``.

        The vision tower and the region pyramid run once per distinct image of the batch, and a box's RoI
        branch once per distinct (image, box): the four options of a multiple-choice question, or several
        prompts about one picture, cost one picture (:func:`unique_rows`; the values are the same as without it).
        """
        if self.share_visual_features:
            unique_pixels, image_of = unique_rows(pixel_values)
        else:
            unique_pixels, image_of = pixel_values, torch.arange(pixel_values.shape[0], device=pixel_values.device)
        global_tokens, level_tokens = self.image_features(unique_pixels)
        per_image: list[list[list[float]]] = [[] for _ in range(unique_pixels.shape[0])]
        seen: dict[tuple[int, tuple[float, ...]], tuple[int, int]] = {}
        picks = []
        for sample, sample_boxes in enumerate(boxes):
            image = int(image_of[sample])
            rows = []
            for box in sample_boxes.tolist():
                key = (image, tuple(box)) if self.share_visual_features else (image, (len(rows), *box))
                if key not in seen:
                    seen[key] = (image, len(per_image[image]))
                    per_image[image].append(box)
                rows.append(seen[key])
            picks.append(rows)
        regions = [pixel_values.new_zeros((0, global_tokens.shape[-1]))] * len(boxes)
        if seen:
            device = pixel_values.device
            flat = self.region_module(level_tokens, [torch.tensor(b, device=device).reshape(-1, 4) for b in per_image])
            offsets = [0]
            for image_boxes in per_image:
                offsets.append(offsets[-1] + len(image_boxes))
            regions = [flat[torch.tensor([offsets[image] + row for image, row in rows], dtype=torch.long, device=device)]
                       for rows in picks]
        return global_tokens[image_of], regions

    def splice(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        pixel_values: torch.Tensor,
        boxes: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """``inputs_embeds`` with image features at ``<im_patch>`` and region features at ``<roi>``."""
        batch = input_ids.shape[0]
        if pixel_values.shape[0] != batch:
            raise ValueError(f"GPT4RoI: {pixel_values.shape[0]} images for a batch of {batch} sequences")
        boxes = list(boxes) if boxes is not None else [input_ids.new_zeros((0, 4), dtype=torch.float)] * batch
        if len(boxes) != batch:
            raise ValueError(f"GPT4RoI: {len(boxes)} box lists for a batch of {batch} sequences")
        self.check_placeholders(input_ids, boxes)
        boxes = [b.to(device=pixel_values.device) for b in boxes]
        global_tokens, regions = self.visual_features(pixel_values, boxes)
        return self.splice_features(input_ids, inputs_embeds, global_tokens, regions)

    def check_placeholders(self, input_ids: torch.LongTensor, boxes: list[torch.Tensor]) -> None:
        """One image span (or none) per sample and exactly one ``<roi>`` per box, else an error naming the sample."""
        config = self.config
        patches_per_row = (input_ids == config.image_patch_token_id).sum(dim=1).tolist()
        rois_per_row = (input_ids == config.roi_token_id).sum(dim=1).tolist()
        for index in range(input_ids.shape[0]):
            if patches_per_row[index] not in (0, config.num_image_tokens):
                raise ValueError(
                    f"GPT4RoI: batch sample {index} has {patches_per_row[index]} image patch tokens; expected "
                    f"0 or {config.num_image_tokens} (one image span)"
                )
            if rois_per_row[index] != len(boxes[index]):
                raise ValueError(
                    f"GPT4RoI: batch sample {index} has {rois_per_row[index]} <roi> tokens but "
                    f"{len(boxes[index])} boxes; each box needs exactly one <roi>"
                )

    def splice_features(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor, global_tokens: torch.Tensor,
                        regions: list[torch.Tensor]) -> torch.Tensor:
        """Put precomputed :meth:`visual_features` in at the placeholders (samples without an image span keep
        their token embeddings). Features move to the embeddings' device and dtype: under a ``device_map`` the
        vision tower and the LLM's embeddings may sit on different GPUs."""
        dtype, device = inputs_embeds.dtype, inputs_embeds.device
        patch_mask = input_ids == self.config.image_patch_token_id
        with_image = patch_mask.any(dim=1)
        if bool(with_image.any()):
            features = global_tokens[with_image].reshape(-1, global_tokens.shape[-1]).to(device, dtype)
            inputs_embeds = inputs_embeds.masked_scatter(patch_mask.unsqueeze(-1), features)
        if sum(len(r) for r in regions):
            roi_mask = input_ids == self.config.roi_token_id
            inputs_embeds = inputs_embeds.masked_scatter(roi_mask.unsqueeze(-1), torch.cat(regions).to(device, dtype))
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        boxes: list[torch.Tensor] | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        """Llama's causal-LM output (loss when ``labels`` are given) for the spliced embeddings.

        ``boxes[i]`` are sample ``i``'s normalised ``xyxy`` boxes, one per ``<roi>`` in its ``input_ids``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("GPT4RoI: give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if pixel_values is not None:
                inputs_embeds = self.splice(input_ids, inputs_embeds, pixel_values, boxes)
            elif bool((input_ids == self.config.roi_token_id).any()) and boxes is not None:
                raise ValueError("GPT4RoI: boxes were given without pixel_values; regions are pooled from the image")
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args, boxes=None, **kwargs):
        """Pass ``boxes`` only where ``generate`` still passes ``pixel_values`` (the prefill)."""
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        if inputs.get("pixel_values") is not None:
            inputs["boxes"] = boxes
        return inputs


def unique_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct samples of a batch (compared exactly) and, per sample, the index of its distinct sample.

    The distinct samples keep their order of first appearance, so a batch without repeats comes back as it is.
    """
    if tensor.shape[0] <= 1 or tensor.device.type == "meta":  # meta tensors have no values to compare
        return tensor, torch.arange(tensor.shape[0], device=tensor.device)
    _, inverse = torch.unique(tensor.flatten(1), dim=0, return_inverse=True)
    first: dict[int, int] = {}
    for sample, group in enumerate(inverse.tolist()):
        first.setdefault(group, sample)
    order = list(first.values())
    renumber = {group: index for index, group in enumerate(first)}
    image_of = torch.tensor([renumber[g] for g in inverse.tolist()], dtype=torch.long, device=tensor.device)
    return tensor[order], image_of
