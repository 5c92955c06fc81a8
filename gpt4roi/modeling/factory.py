"""``build_model(cfg)``: the one place that turns a ``conf/architecture/*.yaml`` config into (model, processor).

Three ways, chosen by the config:
- ``pretrained: <folder>``: a folder written by :func:`save_pretrained` (model and processor together);
- ``vision_path`` + ``llm_path`` (``gpt4roi_7b``): CLIP and a Llama/Vicuna from local folders, the
  multimodal tokens added to the LLM's tokenizer, a freshly initialised projector and region module;
- otherwise (``tiny``): everything built from the config's dimensions with a tiny BPE tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from ..processing import GPT4RoIProcessor
from ..tokenizer import add_multimodal_tokens, multimodal_token_ids, train_tiny_tokenizer
from .configuration_gpt4roi import GPT4RoIConfig, square_side
from .modeling_gpt4roi import GPT4RoIForCausalLM

#: Values a model config leaves unset: absent, empty, or Hydra's mandatory ``???`` kept as a string.
UNSET = (None, "", "???")


def plain_config(cfg: Any) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf config (mandatory ``???`` values kept as the string).

    Model factories read keys with ``.get`` and compare against :data:`UNSET`, which works the same on
    either input once it is a plain dict.
    """
    if isinstance(cfg, Mapping) and not hasattr(cfg, "_get_node"):
        return dict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def torch_dtype(name: str | None) -> torch.dtype:
    """The torch dtype a model config names (``float32`` when unset); a clear error for a wrong name."""
    if name in UNSET:
        return torch.float32
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"model config: dtype {name!r} is not a torch dtype (e.g. float32, bfloat16)")
    return dtype


def _local_folder(cfg: Mapping[str, Any], key: str, what: str) -> Path:
    """``cfg[key]`` as an existing folder holding ``config.json``, or an error saying what to provide."""
    value = cfg.get(key)
    if value in UNSET:
        raise FileNotFoundError(f"model config {cfg.get('name', '')!r}: set {key}=<local folder of {what}>")
    folder = Path(str(value)).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model config: {key}={folder} is not a local folder of {what} (no config.json there)")
    return folder


def save_pretrained(model: GPT4RoIForCausalLM, processor: GPT4RoIProcessor, folder: str | Path) -> None:
    """Model (safetensors + config) and processor (tokenizer + settings) into one folder."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def load_pretrained(folder: str | Path, dtype: torch.dtype | str = torch.float32,
                    device_map: str | Mapping[str, Any] | None = None, **processor_overrides: Any):
    """``(model, processor)`` from a folder written by :func:`save_pretrained`; ``dtype`` may be ``auto`` (the
    saved one), ``device_map`` places the weights as transformers does (``auto``: over every visible GPU)."""
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved GPT4RoI model (no config.json)")
    model = GPT4RoIForCausalLM.from_pretrained(str(folder), dtype=dtype, device_map=device_map)
    return model, GPT4RoIProcessor.from_pretrained(folder, **processor_overrides)


def build_tiny(cfg: Mapping[str, Any]) -> tuple[GPT4RoIForCausalLM, GPT4RoIProcessor]:
    """A randomly initialised model from the config's dimensions, seeded by ``init_seed``, with a tiny trained
    tokenizer."""
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    tokenizer = train_tiny_tokenizer(vocab_size=int(cfg.get("tokenizer", {}).get("vocab_size", 1024)))
    text = dict(cfg.get("text", {}))
    text.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = GPT4RoIConfig(
        vision_config=CLIPVisionConfig(**cfg.get("vision", {})),
        text_config=LlamaConfig(**text),
        **dict(cfg.get("region", {})),
        **multimodal_token_ids(tokenizer),
    )
    model = GPT4RoIForCausalLM(config).to(torch_dtype(cfg.get("dtype")))
    if cfg.get("backbone") not in UNSET:
        load_backbone(model, cfg["backbone"])
    return model, _processor(tokenizer, config, cfg)


#: The parts a pretrained backbone file (``gpt4roi pretrain``) holds: "the CLIP", "the Vicuna" and the LLaVA-style
#: projector between them.
BACKBONE_PARTS = ("vision_tower.", "language_model.", "projector.")


def load_backbone(model: torch.nn.Module, path: str | Path) -> None:
    """Load the vision tower, LLM and projector weights of a ``gpt4roi pretrain`` safetensors file into ``model`` (a
    relative path is under the project root); the region module keeps its initial weights."""
    from safetensors.torch import load_file

    file = Path(path).expanduser()
    file = file if file.is_absolute() else Path(__file__).resolve().parents[2] / file
    if not file.is_file():
        raise FileNotFoundError(f"backbone={path}: no such file ({file}); run `gpt4roi pretrain` to write it")
    state = load_file(str(file))
    wanted = {k for k in model.state_dict() if k.startswith(BACKBONE_PARTS)}
    if set(state) != wanted:
        raise ValueError(f"{file}: not a backbone of this architecture (missing {sorted(wanted - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - wanted)[:3]})")
    dtype = next(model.parameters()).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)


def build_from_parts(cfg: Mapping[str, Any]) -> tuple[GPT4RoIForCausalLM, GPT4RoIProcessor]:
    """GPT4RoI on pretrained CLIP and LLM folders; projector and region module start from scratch."""
    vision_path = _local_folder(cfg, "vision_path", "a CLIP vision model (e.g. clip-vit-large-patch14)")
    llm_path = _local_folder(cfg, "llm_path", "a Llama-architecture LLM with its tokenizer (e.g. Vicuna-7B)")
    dtype = torch_dtype(cfg.get("dtype"))
    vision = CLIPVisionModel.from_pretrained(str(vision_path), dtype=dtype)
    llm = LlamaForCausalLM.from_pretrained(str(llm_path), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(llm_path))
    added = add_multimodal_tokens(tokenizer)
    if added or llm.get_input_embeddings().weight.shape[0] < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    config = GPT4RoIConfig(
        vision_config=vision.config,
        text_config=llm.config,
        **dict(cfg.get("region", {})),
        **multimodal_token_ids(tokenizer),
    )
    with torch.device("meta"):
        model = GPT4RoIForCausalLM(config)
    model.vision_tower = vision
    model.language_model = llm
    model.projector = torch.nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
    model.region_module = type(model.region_module)(config)
    for module in (model.projector, model.region_module):
        module.apply(model._init_weights)
        module.to(dtype)
    model.config.text_config = llm.config
    return model, _processor(tokenizer, config, cfg)


def _processor(tokenizer, config: GPT4RoIConfig, cfg: Mapping[str, Any]) -> GPT4RoIProcessor:
    return GPT4RoIProcessor(
        tokenizer,
        image_size=square_side(config.vision_config.image_size),
        num_image_tokens=config.num_image_tokens,
        max_length=int(cfg.get("max_length", 2048)),
        image_root=cfg.get("image_root") if cfg.get("image_root") not in UNSET else None,
    )


def build_model(cfg: Any) -> tuple[GPT4RoIForCausalLM, GPT4RoIProcessor]:
    """``(model, processor)`` from a ``conf/architecture`` config (a dict or an OmegaConf node); see module docstring."""
    plain = plain_config(cfg)
    if plain.get("pretrained") not in UNSET:
        overrides = {"image_root": plain["image_root"]} if plain.get("image_root") not in UNSET else {}
        return load_pretrained(plain["pretrained"], torch_dtype(plain.get("dtype")), **overrides)
    if "vision_path" in plain or "llm_path" in plain:
        return build_from_parts(plain)
    return build_tiny(plain)
