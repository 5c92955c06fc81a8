"""Trained models behind the evaluators' protocol (DESIGN.md §6): GPT4RoI and the image-level baselines.

Both families are a ``(model, processor)`` pair saved in one folder (a training run's ``hf/``) and answer
through the same code, :func:`gpt4roi.modeling.inference.generate_for_rows` and ``loglikelihood``: the
request's row (image, regions, the task's prompt as its only human turn) goes to the processor, which renders
regions its own way — ``<roi>`` features for GPT4RoI, a :mod:`baselines.renderers` renderer for a baseline.
This module lives in ``baselines`` because it is the one place allowed to import both ``gpt4roi`` and
``evaluators`` (DESIGN.md §2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from evaluators.data import files_digest
from evaluators.protocol import EvalModel, Request, digest
from gpt4roi.modeling.inference import generate_for_rows, loglikelihood
from gpt4roi.processing import PROCESSOR_FILE, STOP_MARKER
from gpt4roi.train.data import ImageLoader

FAMILIES = ("gpt4roi", "image_level")


class PretrainedRegionModel(EvalModel):
    """A saved GPT4RoI or image-level baseline, answering the evaluators' requests.

    ``pretrained``: the folder (``save_pretrained`` output, e.g. ``<run>/hf``); the family is read from its
    ``config.json``. ``image_root``: one folder, or ``{source: folder, "*": fallback}`` — evaluation rows of
    different sources have paths relative to different raw releases. ``batch_size`` rows per forward pass;
    ``threads`` caps torch's CPU threads (``null``: leave as is).
    """

    def __init__(self, pretrained: str, image_root: str | Mapping[str, str] | None = None, dtype: str = "float32",
                 device: str = "cpu", batch_size: int = 8, threads: int | None = None):
        self.folder = Path(pretrained).expanduser()
        config = self.folder / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{self.folder} holds no saved model (no config.json); give pretrained=<run>/hf")
        model_type = json.loads(config.read_text()).get("model_type")
        self.family = {"gpt4roi": "gpt4roi", "gpt4roi_image": "image_level"}.get(model_type)
        if self.family is None:
            raise ValueError(f"{config}: model_type {model_type!r} is neither GPT4RoI nor an image-level baseline")
        if isinstance(image_root, Mapping):
            image_root = {str(k): str(v) for k, v in image_root.items()}
        self.images = ImageLoader(image_root)
        self.dtype, self.device, self.batch_size = dtype, device, int(batch_size)
        if threads:
            torch.set_num_threads(int(threads))

    @cached_property
    def loaded(self):
        """``(model, processor)``, loaded on first use (a fully cached evaluation never loads the weights)."""
        dtype = getattr(torch, self.dtype)
        if self.family == "gpt4roi":
            from gpt4roi.modeling.factory import load_pretrained

            model, processor = load_pretrained(self.folder, dtype)
        else:
            from .image_level import load_image_model

            model, processor = load_image_model(self.folder, dtype)
        return model.to(self.device).eval(), processor

    @cached_property
    def fingerprint(self) -> str:
        """Weights, model config and processor settings (renderer included): retrain, and the cache misses."""
        files = sorted(p for p in self.folder.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file())
        settings = json.loads((self.folder / PROCESSOR_FILE).read_text()) if (self.folder / PROCESSOR_FILE).is_file() else {}
        return digest(self.family, files_digest(files), settings, self.dtype)

    def _rows_and_images(self, requests: Sequence[Request]):
        rows = [dict(request.row) for request in requests]
        blind = self.family == "image_level" and self.loaded[1].renderer.num_images == 0
        return rows, [None if blind else self.images(row) for row in rows]

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
