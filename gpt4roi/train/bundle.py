"""What the loop needs from a model family: the module, how rows become inputs, and its identity.

The loop never imports the model package itself; ``cfg.model_factory`` names a function
``(architecture config, max_length) -> Bundle``. GPT4RoI's factory lives here; tests and baselines provide their own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .data import Collate, Encode

RUNTIME_KEYS = ("max_length",)  # architecture keys that do not change the weights


@dataclass
class Bundle:
    """A model ready to train.

    ``model`` must offer ``set_trainable(groups)`` and return ``.logits`` aligned with ``labels``;
    ``encode(row, image)`` turns one schema row into tensors (it runs in DataLoader workers, so it must
    pickle); ``identity`` is the JSON model config a checkpoint is checked against; ``layer_classes`` are
    the decoder-layer classes FSDP shards one by one; ``export(folder)`` writes a ``from_pretrained`` folder.
    """

    model: nn.Module
    encode: Encode
    collate: Collate
    identity: dict[str, Any]
    layer_classes: tuple[type, ...] = ()
    export: Callable[[Path], None] | None = field(default=None)


def load_factory(spec: str) -> Callable[[Any, int], Bundle]:
    """The function named ``package.module:function``, with a clear error when it does not exist."""
    module_name, _, function_name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model_factory={spec!r} cannot be imported: {exc}") from exc


def gpt4roi_bundle(model_cfg: Any, max_length: int) -> Bundle:
    """GPT4RoI from a ``conf/architecture`` config (:func:`gpt4roi.modeling.factory.build_model`)."""
    from omegaconf import OmegaConf
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from ..modeling.factory import build_model, save_pretrained

    model, processor = build_model(model_cfg)
    processor.max_length = max_length
    identity = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    for key in RUNTIME_KEYS:  # settings that do not change the weights: a checkpoint stays valid across them
        identity.pop(key, None)
    return Bundle(model=model, encode=processor.encode, collate=processor.collate, identity=identity,
                  layer_classes=(LlamaDecoderLayer,), export=lambda folder: save_pretrained(model, processor, folder))
