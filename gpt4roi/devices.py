"""Where one evaluation process puts its model: the device a config names, or ``auto``.

Every model family of the evaluators (GPT4RoI, the image-level baselines, ``hf_vlm``) reads ``device`` the same
way, so one ``torchrun --nproc_per_node=N gpt4roi eval ...`` spreads any of them over the machine's GPUs.
"""

from __future__ import annotations

import os

import torch


def pick_device(device: str) -> torch.device:
    """``auto``: this rank's GPU (``LOCAL_RANK`` under torchrun, shared round-robin when ranks outnumber GPUs)
    when there is one, else the CPU. ``cuda`` without an index is this rank's GPU too (every rank on ``cuda:0``
    is never what a torchrun means); any other value is taken as a torch device name (``cpu``, ``cuda:1``)."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % max(torch.cuda.device_count(), 1))
    return torch.device("cpu" if device == "auto" else device)
