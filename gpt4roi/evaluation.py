"""A saved GPT4RoI behind the evaluators' protocol (docs/design.md#model-protocol).

``conf/eval/model/gpt4roi.yaml`` names :class:`PretrainedRegionModel` as its ``_target_``: it loads a
``(model, processor)`` pair saved in one folder (a training run's ``hf/``) and answers requests through
:func:`gpt4roi.modeling.inference.generate_for_rows` and ``loglikelihood``. The request's row (image, regions,
the task's prompt as its only human turn) goes to the processor, which puts each region in as ``<roi>``
features. A model family that shares this code and differs in how it loads and which images it reads (the
image-level baselines, :mod:`baselines.adapters`) subclasses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from evaluators.protocol import PROMPT_FORMATS, EvalModel, Request, digest, files_digest, with_prompt_format

from .conversation import STOP_MARKER
from .devices import pick_device
from .modeling.configuration_gpt4roi import GPT4RoIConfig
from .modeling.factory import load_pretrained
from .modeling.inference import generate_for_rows, loglikelihood
from .processing import PROCESSOR_FILE
from .train.data import ImageLoader


class PretrainedRegionModel(EvalModel):
    """A saved GPT4RoI answering the evaluators' requests.

    ``pretrained``: the folder (``save_pretrained`` output, e.g. ``<run>/hf``); its ``config.json`` must name
    :attr:`model_type`. ``image_root``: one folder, or ``{source: folder, "*": fallback}`` — evaluation rows of
    different sources have paths relative to different raw releases. ``batch_size`` rows per forward pass;
    ``dtype``: a torch dtype name, or ``auto`` for the checkpoint's own. ``device``: a torch device, or ``auto``
    (:func:`gpt4roi.devices.pick_device`: this rank's GPU under ``torchrun``, else the CPU). ``device_map``
    (e.g. ``auto``): spread a model that does not fit one GPU over the visible ones (``device`` is then unused).
    ``threads`` caps torch's CPU threads (``null``: leave as is). ``prompt_format`` is how the first human
    turn opens (:data:`evaluators.protocol.PROMPT_FORMATS`): GPT4RoI's own "The <image> provides an overview of
    the picture." by default, ``plain`` for a model trained on the suite's rows, which keep ``<image>`` alone.
    ``coordinates`` declares how the model writes boxes (grounding tasks; ``null``: it does not).
    """

    #: Part of the fingerprint, so two families never share cached answers.
    family = "gpt4roi"
    #: The ``model_type`` a saved folder of this family has in its ``config.json``.
    model_type = GPT4RoIConfig.model_type
    #: How an error names the model this class expects.
    described_as = "a GPT4RoI model"
    #: The prompt format of the family's own training data.
    default_prompt_format = "gpt4roi"

    def __init__(self, pretrained: str, image_root: str | Mapping[str, str] | None = None, dtype: str = "float32",
                 device: str = "auto", device_map: str | Mapping[str, Any] | None = None, batch_size: int = 8,
                 threads: int | None = None, prompt_format: str | None = None, coordinates: str | None = None):
        self.folder = Path(pretrained).expanduser()
        config = self.folder / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{self.folder} holds no saved model (no config.json); give pretrained=<run>/hf")
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type != self.model_type:
            raise ValueError(f"{config}: model_type {model_type!r} is not {self.model_type!r}; the folder does not "
                             f"hold {self.described_as}")
        if isinstance(image_root, Mapping):
            image_root = {str(k): str(v) for k, v in image_root.items()}
        self.image_loader = ImageLoader(image_root)
        if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"{self.family} dtype={dtype!r}: a torch dtype name (float32, bfloat16, float16) or auto")
        self.dtype, self.device, self.batch_size = dtype, device, int(batch_size)
        self.device_map = dict(device_map) if isinstance(device_map, Mapping) else device_map
        self.prompt_format = prompt_format or self.default_prompt_format
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format={self.prompt_format!r}; one of {sorted(PROMPT_FORMATS)}")
        self.coordinates = coordinates
        if threads:
            torch.set_num_threads(int(threads))

    def load(self, dtype: torch.dtype | str) -> tuple[Any, Any]:
        """``(model, processor)`` from the folder, placed by :attr:`device_map` when set; a subclass loads its own
        family."""
        return load_pretrained(self.folder, dtype, device_map=self.device_map)

    def images(self, rows: Sequence[Mapping[str, Any]]) -> list[Image.Image | None]:
        """The image of each row; a subclass whose model reads no pixels gives ``None`` instead."""
        return [self.image_loader(row) for row in rows]

    @cached_property
    def loaded(self) -> tuple[Any, Any]:
        """``(model, processor)``, loaded on first use (a fully cached evaluation never loads the weights)."""
        model, processor = self.load("auto" if self.dtype == "auto" else getattr(torch, self.dtype))
        if self.device_map is None:
            model = model.to(pick_device(self.device))
        return model.eval(), processor

    @cached_property
    def fingerprint(self) -> str:
        """Weights, model config and processor settings: retrain, and the cache misses."""
        files = sorted(p for p in self.folder.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file())
        settings_file = self.folder / PROCESSOR_FILE
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        return digest(self.family, files_digest(files), settings, self.dtype, self.prompt_format)

    def _rows_and_images(self, requests: Sequence[Request]) -> tuple[list[dict[str, Any]], list[Image.Image | None]]:
        rows = [with_prompt_format(request.row, self.prompt_format) for request in requests]
        return rows, self.images(rows)

    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        model, processor = self.loaded
        rows, images = self._rows_and_images(requests)
        stop = gen_kwargs.get("stop") or [STOP_MARKER]
        return generate_for_rows(model, processor, rows, max_new_tokens=int(gen_kwargs.get("max_new_tokens", 64)),
                                 images=images, batch_size=self.batch_size,
                                 temperature=float(gen_kwargs.get("temperature", 0.0)),
                                 stop=[stop] if isinstance(stop, str) else list(stop))

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        model, processor = self.loaded
        rows, images = self._rows_and_images(requests)
        return loglikelihood(model, processor, rows, [request.continuation for request in requests], images=images,
                             batch_size=self.batch_size)
