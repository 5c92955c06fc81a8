"""Training throughput of the tiny GPT4RoI on this CPU, and the data loader's share of a step.

Input: the synthetic world's VG region captions (``benchmarks/scratch/train_world``, built once). Measured:

* **loader alone**: the training DataLoader (image decoding + processor + collation, ``num_workers`` as
  configured) drained without any model work, in seconds per micro-batch;
* **step**: one optimiser step of stage 1 (region module trains) and stage 2 (all but vision) on batches
  already in memory, as the median of repeats, in tokens / s and samples / s;
* **loader share** = loader time / (loader time + step time): the fraction of a step the loader would cost if
  it did not overlap with compute at all (with workers it overlaps, so this is an upper bound).

``python -m benchmarks train_throughput [-- --steps N --batch B --threads T]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from benchmarks._measure import WORK, machine, write_result
from gpt4roi.train.bundle import gpt4roi_bundle
from gpt4roi.train.data import CorpusSpec, ImageLoader, MicroBatches, loader, make_plan, open_rows
from gpt4roi.train.loop import Trainer
from gpt4roi.train.settings import read_settings

NAME = "train_throughput"
CONF = Path(__file__).resolve().parent.parent / "conf"
MAX_LENGTH = 256  # tokens per sample, as experiment=tiny_stage1 trains (stage-1 rows are short)


def corpus(work: Path) -> tuple[Path, Path]:
    """The synthetic world's VG build (``region_caption`` rows), made once under ``work``."""
    from builders.build import build_source
    from builders.synthetic import synthesize

    world, built = work / "train_world", work / "train_world_vg"
    if not (world / "vg").is_dir():
        synthesize(world, "small", 0)
    if not (built / "data").is_dir():
        build_source("vg", world / "vg", built, progress=False)
    return built, world / "vg"


def settings_for(trainable: list[str], batch: int) -> Any:
    trainer = OmegaConf.load(CONF / "train" / "trainer" / "stage1.yaml")
    trainer.merge_with(OmegaConf.load(CONF / "train" / "trainer" / "tiny.yaml"))
    trainer.trainable, trainer.per_device_batch_size, trainer.global_batch_size = trainable, batch, batch
    return read_settings(trainer, seed=0, max_length=MAX_LENGTH)


def run(steps: int = 5, batch: int = 8, workers: int = 1) -> dict[str, Any]:
    built, images = corpus(WORK)
    spec = CorpusSpec(path=str(built), image_root=str(images))
    rows = open_rows(spec)
    bundle = gpt4roi_bundle(OmegaConf.load(CONF / "architecture" / "tiny.yaml"), max_length=MAX_LENGTH)
    plan = make_plan(len(rows), 1, steps + 1, batch, batch, 1)
    stream = MicroBatches(rows, plan, rank=0, per_device=batch, seed=0, start_step=0, encode=bundle.encode,
                          collate=bundle.collate, images=ImageLoader(spec.image_roots()), letter=False)
    started = time.perf_counter()
    batches = list(loader(stream, workers, seed=0))
    loader_seconds = (time.perf_counter() - started) / len(batches)

    result: dict[str, Any] = {"batch": batch, "workers": workers, "threads": torch.get_num_threads(),
                              "loader_seconds_per_batch": round(loader_seconds, 3)}
    for stage, trainable in (("stage1", ["region_module"]), ("stage2", ["region_module", "projector", "llm"])):
        bundle.model.set_trainable(trainable)
        trainer = Trainer(settings_for(trainable, batch), bundle.model, torch.device("cpu"), Path("."), steps + 1, 1)
        bundle.model.train()
        times, tokens = [], []
        for index, micro in enumerate(batches):
            began = time.perf_counter()
            metrics = trainer.step([micro], index)
            times.append(time.perf_counter() - began)
            tokens.append(metrics["tokens"])
        step = statistics.median(times[1:])  # the first step warms up allocators and kernels
        result[stage] = {"step_seconds": round(step, 3), "tokens_per_step": round(statistics.mean(tokens), 1),
                         "tokens_per_s": round(statistics.mean(tokens) / step, 1),
                         "samples_per_s": round(batch / step, 2),
                         "loader_share": round(loader_seconds / (loader_seconds + step), 3)}
    return result


A100_BF16_TFLOPS = 312.0   # dense bf16 peak of one A100 (NVIDIA data sheet)
ASSUMED_MFU = 0.4          # model-FLOP utilisation a well-tuned FSDP run reaches; a planning assumption
VICUNA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32004, "max_position_embeddings": 2048}


def paper_math(seq: int = 2048, rois: int = 8) -> dict[str, Any]:
    """GPT4RoI-7B on the meta device (no memory, no compute): parameters, FLOPs and saved activations.

    FLOPs are counted by ``torch.utils.flop_counter`` over one sample's forward and backward with each
    stage's trainable groups; saved activations are the tensors autograd keeps for backward (bf16),
    counted once per storage and without parameters. Attention score matrices (``seq x seq``), which the
    meta device's math attention saves but flash / memory-efficient attention never materialises, are
    reported apart and left out of the totals. With gradient checkpointing (one checkpoint per decoder
    layer) a layer keeps only its input; the backward recomputes one layer at a time.
    """
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig

    from gpt4roi.modeling.configuration_gpt4roi import GPT4RoIConfig
    from gpt4roi.modeling.modeling_gpt4roi import GPT4RoIForCausalLM

    config = GPT4RoIConfig(text_config=LlamaConfig(**VICUNA_7B), image_start_token_id=32000,
                           image_patch_token_id=32001, image_end_token_id=32002, roi_token_id=32003)
    with torch.device("meta"):
        model = GPT4RoIForCausalLM(config).to(torch.bfloat16)
    params = {name: module_params(module) for name, module in model.module_groups().items()}
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    width, layers = VICUNA_7B["hidden_size"], VICUNA_7B["num_hidden_layers"]
    result: dict[str, Any] = {"parameters": {**params, "total": sum(params.values())}, "tokens": seq, "rois": rois}
    saved: dict[int, tuple[int, str]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            square = tensor.dim() >= 2 and tuple(tensor.shape[-2:]) == (seq, seq)
            saved[storage._cdata] = (storage.nbytes(), "attention_scores" if square else "kept")
        return tensor

    for stage, trainable in (("stage1", ["region_module"]), ("stage2", ["region_module", "projector", "llm"])):
        model.set_trainable(trainable)
        saved.clear()
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            global_tokens, levels = model.image_features(torch.zeros(1, 3, 224, 224, device="meta",
                                                                     dtype=torch.bfloat16))
            regions = model.region_module(levels, [torch.zeros(rois, 4, device="meta")])
            region_bytes = sum(size for size, _ in saved.values())
            before_llm = counter.get_total_flops()
            embeds = torch.zeros(1, seq, width, device="meta", dtype=torch.bfloat16, requires_grad=True)
            logits = model.language_model(inputs_embeds=embeds + global_tokens.sum() + regions.sum()).logits
            forward = counter.get_total_flops()
            llm_forward = forward - before_llm  # what per-layer checkpointing recomputes
            logits.float().sum().backward()
        kept = sum(size for size, kind in saved.values() if kind == "kept")
        softmax = seq * VICUNA_7B["vocab_size"] * 4  # the fp32 softmax the cross-entropy keeps
        per_layer = (kept - region_bytes) / layers
        checkpointed = layers * seq * width * 2 + per_layer + region_bytes + softmax
        total = counter.get_total_flops()
        result[stage] = {
            "trainable_parameters": sum(params[name] for name in trainable),
            "forward_tflop_per_sample": round(forward / 1e12, 2),
            "train_tflop_per_sample": round(total / 1e12, 2),
            "train_tflop_per_sample_checkpointed": round((total + llm_forward) / 1e12, 2),
            "activations_gib_per_sample": round((kept + softmax) / 2**30, 2),
            "activations_gib_per_sample_checkpointed": round(checkpointed / 2**30, 2),
            "region_module_activations_gib": round(region_bytes / 2**30, 2),
            "attention_scores_gib_if_materialised": round(
                sum(size for size, kind in saved.values() if kind != "kept") / 2**30, 2),
        }
    total_params = result["parameters"]["total"]
    for stage, global_batch, gpus in (("stage1", 4, 4), ("stage2", 16, 8)):  # as the released scripts ran
        entry = result[stage]
        flop = entry["train_tflop_per_sample_checkpointed"] * 1e12 * global_batch
        trainable = entry["trainable_parameters"]
        # fp32 master weights + gradients + two AdamW moments for trainable, fp32 weights for frozen; sharded
        states = (16 * trainable + 4 * (total_params - trainable)) / gpus
        entry.update(global_batch=global_batch, gpus=gpus,
                     step_seconds_on_A100s_at_40pct_mfu=round(flop / (gpus * A100_BF16_TFLOPS * 1e12 * ASSUMED_MFU), 2),
                     model_states_gib_per_gpu_fsdp=round(states / 2**30, 1))
    return result


def module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks train_throughput")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv or [])
    if args.threads:
        torch.set_num_threads(args.threads)
    import os

    result = {"machine": machine(), "load_average": os.getloadavg(),
              "tiny_cpu": run(args.steps, args.batch, args.workers), "gpt4roi_7b_paper_math": paper_math()}
    print(write_result(NAME, result).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
