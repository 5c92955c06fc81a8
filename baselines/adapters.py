"""A saved image-level baseline behind the evaluators' protocol (docs/design.md#model-protocol).

``conf/eval/model/image_level.yaml`` names :class:`PretrainedImageLevelModel` as its ``_target_``. It is
GPT4RoI's own adapter (:class:`gpt4roi.evaluation.PretrainedRegionModel`: same folder layout, same
generation and scoring code) with the baseline's loader; its processor renders the regions with the
:mod:`baselines.renderers` renderer saved beside the weights, so the comparison differs in the region
pathway only. It is asked in the suite's ``plain`` prompt format (the rows it was trained on); an
``image_coords`` baseline declares the box convention of its renderer (``float`` -> ``normalized_xyxy``,
``int1000`` -> ``per_mille_xyxy``, ``pixels`` -> ``pixels_xyxy``), so that it can be scored on grounding tasks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from baselines.hf_vlm import RENDERER_COORDS
from baselines.image_level import (
    ImageLevelConfig,
    ImageLevelForCausalLM,
    ImageLevelProcessor,
    load_image_model,
)
from gpt4roi.evaluation import PretrainedRegionModel
from gpt4roi.processing import PROCESSOR_FILE

#: The box convention of each ``image_coords`` coordinate format (the inverse of the Hub VLMs' table).
RENDERER_COORDINATES = {coords: convention for convention, coords in RENDERER_COORDS.items()}


class PretrainedImageLevelModel(PretrainedRegionModel):
    """A saved image-level baseline (``model_type`` ``gpt4roi_image``) answering the evaluators' requests."""

    family = "image_level"
    model_type = ImageLevelConfig.model_type
    described_as = "an image-level baseline"
    default_prompt_format = "plain"

    def __init__(self, pretrained: str, **settings: Any):
        super().__init__(pretrained, **settings)
        if self.coordinates is None:
            renderer = json.loads((self.folder / PROCESSOR_FILE).read_text()).get("renderer") or {}
            if renderer.get("name") == "image_coords":
                self.coordinates = RENDERER_COORDINATES[renderer.get("coords", "float")]

    def load(self, dtype: torch.dtype | str) -> tuple[ImageLevelForCausalLM, ImageLevelProcessor]:
        return load_image_model(self.folder, dtype, device_map=self.device_map)

    def images(self, rows: Sequence[Mapping[str, Any]]) -> list[Image.Image | None]:
        """No image is opened for the ``blind`` renderer, which shows the model none."""
        if self.loaded[1].renderer.num_images == 0:
            return [None] * len(rows)
        return super().images(rows)
