"""Process-group setup and model wrapping for ``torchrun`` (DDP, or FSDP around the decoder layers).

Single-process runs never create a process group; every helper here then behaves as rank 0 of 1, so the
loop has one code path.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def init_from_env() -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment; return this rank's device."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: float | int, device: torch.device) -> float:
    """The sum of ``value`` over ranks (float64, so token counts stay exact)."""
    if not dist.is_initialized():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def wrap(model: torch.nn.Module, strategy: str, layer_classes: tuple[type, ...], bf16: bool) -> torch.nn.Module:
    """The model as this strategy trains it: itself (one process), DDP, or FSDP2 sharding each decoder layer.

    ``auto`` picks FSDP when the model names decoder-layer classes and a GPU is present, DDP otherwise.
    """
    if not dist.is_initialized() or strategy == "none":
        return model
    if strategy == "auto":
        strategy = "fsdp" if layer_classes and torch.cuda.is_available() else "ddp"
    if strategy == "ddp":
        device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not layer_classes:
        raise ValueError("trainer.strategy=fsdp needs a model that names its decoder-layer classes")
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for module in model.modules():
        if isinstance(module, layer_classes):
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def no_sync(model: torch.nn.Module, last_micro_batch: bool) -> AbstractContextManager:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not last_micro_batch:
        return model.no_sync()
    return nullcontext()
