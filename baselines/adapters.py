"""A saved image-level baseline behind the evaluators' protocol (docs/design.md#model-protocol).

``conf/eval/model/image_level.yaml`` names :class:`PretrainedImageLevelModel` as its ``_target_``. It is
GPT4RoI's own adapter (:class:`gpt4roi.evaluation.PretrainedRegionModel`: same folder layout, same
generation and scoring code) with the baseline's loader; its processor renders the regions with the
:mod:`baselines.renderers` renderer saved beside the weights, so the comparison differs in the region
pathway only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from baselines.image_level import (
    ImageLevelConfig,
    ImageLevelForCausalLM,
    ImageLevelProcessor,
    load_image_model,
)
from gpt4roi.evaluation import PretrainedRegionModel


class PretrainedImageLevelModel(PretrainedRegionModel):
    """A saved image-level baseline (``model_type`` ``gpt4roi_image``) answering the evaluators' requests."""

    family = "image_level"
    model_type = ImageLevelConfig.model_type
    described_as = "an image-level baseline"

    def load(self, dtype: torch.dtype) -> tuple[ImageLevelForCausalLM, ImageLevelProcessor]:
        return load_image_model(self.folder, dtype)

    def images(self, rows: Sequence[Mapping[str, Any]]) -> list[Image.Image | None]:
        """No image is opened for the ``blind`` renderer, which shows the model none."""
        if self.loaded[1].renderer.num_images == 0:
            return [None] * len(rows)
        return super().images(rows)
