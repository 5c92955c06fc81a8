"""Which model answers in the chat: ``model=`` names the geometry model, a model config or a saved model.

* ``geometry``: :class:`~gpt4roi.chat.models.BoxGeometryModel` (no weights; describes the boxes);
* a config name in ``conf/architecture/`` (``tiny``, ``gpt4roi_7b``, ...): built by
  :func:`gpt4roi.modeling.factory.build_model` (``tiny`` is randomly initialised unless its ``pretrained``
  is set);
* a folder: one written by ``save_pretrained`` (``config.json``), a training run folder (its ``hf/`` export),
  or a training checkpoint (``state.json`` + ``model.safetensors``, or a run folder's latest checkpoint).

GPT4RoI answers through :func:`gpt4roi.modeling.inference.stream_for_row`: the page receives the answer token
by token as ``generate`` writes it, and a page that goes away stops the generation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..configs import config_dir
from .models import BoxGeometryModel, ChatModel

GEOMETRY = "geometry"


class GPT4RoIChat:
    """A :class:`ChatModel` over a GPT4RoI (model, processor) pair: ``stream(row)`` yields the answer's tokens."""

    def __init__(self, model: Any, processor: Any, max_new_tokens: int):
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens

    def stream(self, row: Mapping[str, Any]) -> Iterator[str]:
        from ..modeling.inference import stream_for_row

        return stream_for_row(self.model, self.processor, row, max_new_tokens=self.max_new_tokens)


def load_chat_model(spec: str, *, device: str = "cpu", max_new_tokens: int = 128) -> tuple[ChatModel, str]:
    """The chat model for ``spec`` (see the module docstring) and a name to show on the page."""
    if spec == GEOMETRY:
        return BoxGeometryModel(), "BoxGeometryModel (describes the boxes; no weights)"
    folder = Path(spec).expanduser()
    if folder.is_dir():
        model, processor, name = _from_folder(folder)
    else:
        model, processor, name = _from_config(spec)
    model = model.to(device).eval()
    return GPT4RoIChat(model, processor, max_new_tokens), name


def _from_config(spec: str) -> tuple[Any, Any, str]:
    from omegaconf import OmegaConf

    configs = config_dir() / "architecture"
    path = configs / f"{spec}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in configs.glob("*.yaml"))
        raise ValueError(f"model={spec!r} is neither {GEOMETRY!r}, a folder, nor a model config "
                         f"(conf/architecture/ has: {', '.join(known) or 'none'})")
    from ..modeling.factory import build_model

    cfg = OmegaConf.load(path)
    model, processor = build_model(cfg)
    weights = cfg.get("pretrained") or "randomly initialised"
    return model, processor, f"GPT4RoI {spec} ({weights})"


def _from_folder(folder: Path) -> tuple[Any, Any, str]:
    for candidate in (folder, folder / "hf"):
        if (candidate / "config.json").is_file():
            from ..modeling.factory import load_pretrained

            model, processor = load_pretrained(candidate)
            return model, processor, f"GPT4RoI from {candidate}"
    # Checked before importing the training package, which is slow to import.
    if not any(path.exists() for path in (folder / "state.json", folder / "final", folder / "checkpoints")):
        raise ValueError(f"model={folder}: not a saved model (no config.json in it or in hf/) nor a training "
                         "checkpoint (no state.json, final/ or checkpoints/)")
    from ..train import checkpoint

    try:
        found = checkpoint.resolve(folder)
    except checkpoint.CheckpointError as exc:
        raise ValueError(f"model={folder}: not a saved model (no config.json in it or in hf/) and {exc}") from None
    identity = checkpoint.read_state(found).get("model")
    if not isinstance(identity, dict):
        raise ValueError(f"model={folder}: {found}/state.json names no model config")
    from ..modeling.factory import build_model

    model, processor = build_model(identity)
    checkpoint.load_weights(found, model, identity)
    return model, processor, f"GPT4RoI {identity.get('name', '')} from {found}".replace("  ", " ")
