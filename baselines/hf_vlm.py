"""Any Hugging Face image-text-to-text model behind the evaluators' protocol (``conf/eval/model/hf_vlm*.yaml``).

``AutoModelForImageTextToText`` + ``AutoProcessor`` checkpoints with a chat template (LLaVA-1.5, Qwen2-VL, ...):
a local ``save_pretrained`` folder or a Hub id. Such a model has no region input, so a request's regions reach
it through one of the suite's renderers (:mod:`baselines.renderers`): text coordinates in the convention the
model declares (``coordinates``: normalised floats, 0–1000 integers or pixels), a box drawn on the image, or a
crop. The rendered question then goes through the model's **own** chat template, as one user turn with one
image entry per rendered image, so each model is asked the way it was trained to be asked.

* ``generate``: the prompts of a batch are left-padded (the new tokens then start at one column for every row),
  greedy unless ``temperature`` > 0, cut at the task's stop strings.
* ``loglikelihood``: ``continuation`` tokenised on its own and appended to the templated prompt (an exact
  boundary, as lm-eval-harness does), the batch left-padded too, and the sum of the continuation's
  log-probabilities. Rotary positions make left padding harmless (a constant shift of every position), and
  Qwen2-VL derives its multimodal positions from the attention mask: a padded row scores what it scores alone
  (tested against one-row batches on both tiny families).
* ``device_map`` (e.g. ``auto``) spreads a model that does not fit one GPU over the visible ones; ``dtype``
  picks its precision. Under ``torchrun`` each rank's model goes to ``cuda:<LOCAL_RANK>`` (``device: auto``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from baselines.renderers import RegionRenderer, renderer_from_config
from builders.placeholders import strip_image_token
from evaluators.protocol import COORDINATE_CONVENTIONS, EvalModel, Request, digest, files_digest
from gpt4roi.devices import pick_device
from gpt4roi.train.data import ImageLoader

#: The renderer's ``coords`` format for each scale a model may declare (its boxes are always written xyxy).
RENDERER_COORDS = {"normalized_xyxy": "float", "per_mille_xyxy": "int1000", "pixels_xyxy": "pixels"}
FINGERPRINTED = (".safetensors", ".json", ".jinja", ".model", ".txt")  # weights, configs, templates, vocabularies


def resolve_renderer(renderer: Mapping[str, Any] | str, coordinates: str | None) -> RegionRenderer:
    """The renderer of the config; ``image_coords`` writes boxes in the model's declared ``coordinates``.

    A config that names both and lets them disagree is an error: the model would read boxes in one convention
    and be scored on boxes in another.
    """
    block = {"name": renderer} if isinstance(renderer, str) else dict(renderer)
    if coordinates is not None and coordinates not in COORDINATE_CONVENTIONS:
        raise ValueError(f"hf_vlm coordinates={coordinates!r}; one of {COORDINATE_CONVENTIONS} (or null)")
    if block.get("name") == "image_coords" and coordinates is not None:
        if coordinates not in RENDERER_COORDS:
            raise ValueError(f"hf_vlm: the image_coords renderer writes xyxy boxes; coordinates={coordinates!r} "
                             f"is not one of {sorted(RENDERER_COORDS)}")
        wanted = RENDERER_COORDS[coordinates]
        if block.setdefault("coords", wanted) != wanted:
            raise ValueError(f"hf_vlm: renderer coords={block['coords']!r} contradicts coordinates={coordinates!r} "
                             f"(which renders as coords={wanted!r})")
    return renderer_from_config(block)


def import_class(path: str) -> type:
    """``package.module:Class`` (or ``package.module.Class``) imported."""
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module:
        raise ValueError(f"processor_class={path!r}: expected package.module:Class")
    return getattr(importlib.import_module(module), name)


def per_token(value: torch.Tensor, input_ids: torch.Tensor) -> bool:
    """Whether an encoding's tensor has one entry per token (ids, masks, token types), not per image."""
    return value.dim() == 2 and value.shape == input_ids.shape


def left_pad(encodings: Sequence[Mapping[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch from single-row encodings: per-token tensors left-padded to the longest row (``input_ids`` with
    ``pad_id``, masks and token types with 0); per-image tensors (pixels, grids, sizes) concatenated."""
    longest = max(enc["input_ids"].shape[1] for enc in encodings)
    batch: dict[str, torch.Tensor] = {}
    for key in encodings[0]:
        values = [enc[key] for enc in encodings]
        if all(per_token(value, enc["input_ids"]) for value, enc in zip(values, encodings, strict=True)):
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.stack([torch.cat([v.new_full((longest - v.shape[1],), fill), v[0]]) for v in values])
        else:
            batch[key] = torch.cat(values)
    return batch


class HFVisionLanguageModel(EvalModel):
    """A Hugging Face VLM answering the evaluators' requests through a region renderer and its chat template.

    ``pretrained``: a ``save_pretrained`` folder or a Hub id (``revision`` pins it). ``renderer``: a
    :mod:`baselines.renderers` block or name; ``coordinates``: the box convention the model declares (it sets
    the ``image_coords`` renderer's format, and grounding tasks read its answers in it). ``image_root``: one
    folder or ``{source: folder, "*": fallback}``. ``system_prompt``: a system turn, or ``null`` for the
    template's default. ``processor_class``: ``null`` for ``AutoProcessor``, or ``module:Class`` for a
    checkpoint whose processor is not registered. ``dtype`` / ``device`` / ``device_map``: where the weights go.
    """

    family = "hf_vlm"

    def __init__(self, pretrained: str, renderer: Mapping[str, Any] | str = "image_coords",
                 coordinates: str | None = None, image_root: str | Mapping[str, str] | None = None,
                 system_prompt: str | None = None, processor_class: str | None = None, revision: str | None = None,
                 dtype: str = "float32", device: str = "auto", device_map: str | Mapping[str, Any] | None = None,
                 batch_size: int = 8, threads: int | None = None):
        self.pretrained, self.revision = str(pretrained), revision
        self.renderer = resolve_renderer(renderer, coordinates)
        self.coordinates = coordinates
        if isinstance(image_root, Mapping):
            image_root = {str(k): str(v) for k, v in image_root.items()}
        self.image_loader = ImageLoader(image_root)
        self.system_prompt, self.processor_class = system_prompt, processor_class
        if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"hf_vlm dtype={dtype!r}: a torch dtype name (float32, bfloat16, float16) or auto")
        self.dtype, self.device, self.device_map = dtype, device, device_map
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"hf_vlm batch_size must be >= 1, got {batch_size}")
        if threads:
            torch.set_num_threads(int(threads))

    @cached_property
    def folder(self) -> Path:
        """The checkpoint's local folder (a Hub id is fetched into, or found in, the Hub cache)."""
        local = Path(self.pretrained).expanduser()
        if local.is_dir():
            if not (local / "config.json").is_file():
                raise FileNotFoundError(f"{local} holds no saved model (no config.json)")
            return local
        if local.exists() or self.pretrained.count("/") > 1:
            raise FileNotFoundError(f"hf_vlm pretrained={self.pretrained!r} is neither a model folder nor a Hub id")
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.pretrained, revision=self.revision))

    @cached_property
    def fingerprint(self) -> str:
        """Weights, configs, tokenizer and chat template, renderer, system prompt, processor class and dtype."""
        files = sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix in FINGERPRINTED)
        return digest(self.family, files_digest(files), asdict(self.renderer), self.system_prompt,
                      self.processor_class, self.dtype)

    @cached_property
    def loaded(self) -> tuple[Any, Any]:
        """``(model, processor)``, loaded on first use (a fully cached evaluation never loads the weights)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        loader = import_class(self.processor_class) if self.processor_class else AutoProcessor
        processor = loader.from_pretrained(str(self.folder))
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"{self.folder}: the processor has no chat template; hf_vlm asks every model in its own")
        dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        model = AutoModelForImageTextToText.from_pretrained(str(self.folder), dtype=dtype, device_map=self.device_map)
        if self.device_map is None:
            model = model.to(pick_device(self.device))
        return model.eval(), processor

    # --- prompts ----------------------------------------------------------------------------------------------
    def prompt(self, request: Request) -> tuple[str, list[Image.Image]]:
        """The request rendered, put through the chat template (generation prompt added), and its images."""
        row = dict(request.row)
        image = self.image_loader(row) if self.renderer.num_images else None
        rendered = self.renderer(row, image)
        question = strip_image_token(str(rendered.row["conversations"][0]["value"]))
        content = [{"type": "image"} for _ in rendered.images] + [{"type": "text", "text": question}]
        messages = [{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]}] \
            if self.system_prompt else []
        messages.append({"role": "user", "content": content})
        text = self.loaded[1].apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, rendered.images

    def encode(self, request: Request, continuation: str = "") -> tuple[dict[str, torch.Tensor], int]:
        """One row's model inputs (batch of 1), with ``continuation``'s tokens appended; their count."""
        processor = self.loaded[1]
        text, images = self.prompt(request)
        encoding = dict(processor(text=[text], images=images or None, return_tensors="pt"))
        if not continuation:
            return encoding, 0
        extra = processor.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if extra.shape[1] == 0:
            raise ValueError(f"request {request.key!r}: its continuation {continuation!r} has no tokens")
        ids = encoding["input_ids"]
        for key, value in list(encoding.items()):
            if per_token(value, ids):
                tail = extra if key == "input_ids" else torch.full_like(extra, 1 if key == "attention_mask" else 0)
                encoding[key] = torch.cat([value, tail.to(value.dtype)], dim=1)
        return encoding, extra.shape[1]

    def batch(self, encodings: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        model, processor = self.loaded
        pad = processor.tokenizer.pad_token_id
        inputs = left_pad(encodings, pad if pad is not None else processor.tokenizer.eos_token_id)
        return {key: value.to(model.device, model.dtype) if value.is_floating_point() else value.to(model.device)
                for key, value in inputs.items()}  # pixels in the weights' precision

    # --- the protocol -----------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        model, processor = self.loaded
        temperature = float(gen_kwargs.get("temperature", 0.0))
        stop = gen_kwargs.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        answers = []
        for start in range(0, len(requests), self.batch_size):
            inputs = self.batch([self.encode(r)[0] for r in requests[start:start + self.batch_size]])
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=int(gen_kwargs.get("max_new_tokens", 64)),
                                        pad_token_id=processor.tokenizer.pad_token_id, **sampling)
            texts = processor.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            answers += [cut_at(text, stops) for text in texts]
        return answers

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        model = self.loaded[0]
        scores = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            encoded = [self.encode(r, r.continuation) for r in chunk]
            inputs = self.batch([enc for enc, _ in encoded])
            with torch.inference_mode():
                logits = model(**inputs).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = inputs["input_ids"][:, 1:]
            picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            scores += [float(picked[i, -count:].sum()) for i, (_, count) in enumerate(encoded)]
        return scores


def cut_at(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first of ``stops``, stripped."""
    for stop in stops:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text.strip()
