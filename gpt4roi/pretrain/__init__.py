"""``gpt4roi pretrain``: the toy backbone that GPT4RoI-tiny and every tiny baseline start from.

GPT4RoI starts from a pretrained LLM (Vicuna), a pretrained vision tower (CLIP) and LLaVA's pretrained projector
between them; a tiny model from random weights learns to read its region only after hundreds of steps. This
command gives the tiny architecture (``conf/architecture/tiny.yaml``) all three, on the synthetic world's
**training** scenes only (:mod:`gpt4roi.pretrain.data`): the LLM as a language model on the training
conversations, the vision tower contrastively on object crops and their descriptions, then (both frozen) the
projector on whole training scenes and their captions, as LLaVA's alignment stage (:mod:`gpt4roi.pretrain.train`):
GPT4RoI's stage 1 loads such a projector and trains only its region module. It writes

* ``<out>/<name>.safetensors``: the ``vision_tower.*``, ``language_model.*`` and ``projector.*`` weights
  (float16, a few MB),
  loaded by any tiny architecture with ``backbone: <file>``;
* ``<out>/<name>.json``: the manifest — command, seed, steps, settings, the data fingerprint, the file's
  sha256, losses, seconds and versions.

One CPU thread, a fixed seed and a fixed data order: a rerun on the same machine writes the same bytes. Other
CPUs may round differently in their matrix kernels; ``tests/test_pretrain.py`` reruns it and compares the
weights to ``manifest.tolerance``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

WEIGHTS_SUFFIX = ".safetensors"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_world(cfg: DictConfig, work: Path) -> Path:
    """``cfg.world`` when given, else the world of ``cfg.scale`` / ``cfg.seed`` synthesised under ``work``."""
    from builders.synthetic import synthesize

    if cfg.world:
        return Path(cfg.world).expanduser().resolve()
    world = work / "world"
    synthesize(world, cfg.scale, int(cfg.seed))
    return world


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Pretrain, write the weights and the manifest, return the manifest."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from builders.storage.report import package_versions

    from ..modeling.factory import BACKBONE_PARTS, build_tiny, plain_config
    from .data import pretrain_data
    from .train import train_language_model, train_projector, train_vision_tower

    torch.set_num_threads(int(cfg.threads))
    started, cpu_started = time.perf_counter(), time.process_time()
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pretrain-") as scratch:
        world = prepare_world(cfg, Path(scratch))
        data = pretrain_data(world, Path(scratch) / "built", int(cfg.seed))
        print(f"pretraining data: {len(data.texts)} training conversations, {len(data.crops)} object crops and "
              f"{len(data.captions)} captioned images of {data.training_scenes} training scenes ({data.held_out_scenes} held-out scenes left out)")
        architecture = {**plain_config(cfg.architecture), "backbone": None}
        model, processor = build_tiny(architecture)
        torch.manual_seed(int(cfg.seed))

        def log(name: str, every: int):
            def show(step: int, loss: float) -> None:
                if step % every == 0:
                    print(f"  {name} step {step}: loss {loss:.3f}", flush=True)
            return show

        lm, vis, proj = cfg.language_model, cfg.vision, cfg.projector
        lm_losses = train_language_model(model.language_model, processor.tokenizer, data.texts, steps=int(lm.steps),
                                         batch_size=int(lm.batch_size), max_tokens=int(lm.max_tokens), lr=float(lm.lr),
                                         seed=int(cfg.seed), log=log("language model", int(cfg.log_every)))
        vision_losses = train_vision_tower(model.vision_tower, processor.pixel_values, processor.tokenizer, world,
                                           data.crops, steps=int(vis.steps), batch_size=int(vis.batch_size),
                                           margin=float(vis.margin), lr=float(vis.lr), seed=int(cfg.seed),
                                           log=log("vision tower", int(cfg.log_every)))
        projector_losses = train_projector(model, processor, world, data.captions, steps=int(proj.steps),
                                           batch_size=int(proj.batch_size), lr=float(proj.lr), seed=int(cfg.seed),
                                           log=log("projector", int(cfg.log_every)))
    weights = out / f"{cfg.name}{WEIGHTS_SUFFIX}"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if k.startswith(BACKBONE_PARTS)}
    # One metadata key: safetensors writes its metadata map in a per-process random order, so two keys would give
    # the same tensors a different sha256 from run to run.
    save_file(state, str(weights), metadata={"backbone": json.dumps({"architecture": str(cfg.architecture.name),
                                                                    "seed": int(cfg.seed)})})
    manifest = {
        "command": " ".join(["gpt4roi", "pretrain", *cfg.get("argv", [])]),
        "config": {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "argv"},
        "seed": int(cfg.seed), "steps": {"language_model": int(lm.steps), "vision": int(vis.steps),
                                            "projector": int(proj.steps)},
        "data": {"fingerprint": data.fingerprint, "training_conversations": len(data.texts),
                 "object_crops": len(data.crops), "captioned_images": len(data.captions),
                 "training_scenes": data.training_scenes,
                 "held_out_scenes": data.held_out_scenes},
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size,
                    "dtype": "float16", "tensors": len(state)},
        "loss": {"language_model": [round(lm_losses[0], 4), round(lm_losses[-1], 4)],
                 "vision": [round(vision_losses[0], 4), round(vision_losses[-1], 4)],
                 "projector": [round(projector_losses[0], 4), round(projector_losses[-1], 4)]},
        "tolerance": {"max_abs_difference": float(cfg.tolerance),
                      "why": "bitwise equal on one machine (one thread, fixed seed and order); another CPU's "
                             "matrix kernels may round differently, and the differences grow over the steps"},
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "versions": package_versions(("torch", "transformers", "tokenizers", "safetensors")),
    }
    (out / f"{cfg.name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(cfg: DictConfig) -> int:
    """Entry point of ``gpt4roi pretrain``."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.argv = [arg for arg in sys.argv[2:] if arg != "--cfg"] if len(sys.argv) > 1 and sys.argv[1] == "pretrain" \
            else []
    manifest = pretrain(cfg)
    print(f"wrote {Path(cfg.out) / manifest['weights']['file']} ({manifest['weights']['bytes'] / 1e6:.1f} MB, "
          f"sha256 {manifest['weights']['sha256'][:16]}) in {manifest['seconds']} s; language model loss "
          f"{manifest['loss']['language_model'][0]} -> {manifest['loss']['language_model'][1]}, vision "
          f"{manifest['loss']['vision'][0]} -> {manifest['loss']['vision'][1]}, projector "
          f"{manifest['loss']['projector'][0]} -> {manifest['loss']['projector'][1]}")
    return 0
