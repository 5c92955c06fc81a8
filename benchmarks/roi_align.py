"""RoIAlign on CPU: our PyTorch implementation (and torchvision's kernel when it imports) on one case.

The case from the GPT4RoI issue: 512 boxes on one 256-channel 64x64 map, sampling ratio 2, aligned, at
7x7 (detector box head) and 14x14 (GPT4RoI's region module) outputs. Times are the median of repeats, for
the forward pass and forward + backward, with the default thread count and with one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._measure import machine, write_result
from gpt4roi.modeling import roi_align as roi_module

NAME = "roi_align"


def make_case(boxes: int = 512, channels: int = 256, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random map and random boxes of 2..48 pixels inside it (``(K, 5)`` rois, image index 0)."""
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, channels, size, size, generator=generator)
    xy = torch.rand(boxes, 2, generator=generator) * (size - 8)
    wh = 2 + torch.rand(boxes, 2, generator=generator) * 46
    x2y2 = torch.minimum(xy + wh, torch.tensor(float(size)))
    return feats, torch.cat([torch.zeros(boxes, 1), xy, x2y2], dim=1)


def median_ms(step: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU milliseconds (CPU time is the steadier figure on a shared machine)."""
    step()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return round(1000 * statistics.median(wall), 1), round(1000 * statistics.median(cpu), 1)


def time_kernel(kernel: Callable, feats: torch.Tensor, rois: torch.Tensor, out: int, repeats: int) -> dict[str, float]:
    def forward():
        kernel(feats, rois, out, 1.0, 2, True)

    def forward_backward():
        grad_feats = feats.detach().requires_grad_(True)
        kernel(grad_feats, rois, out, 1.0, 2, True).sum().backward()

    forward_ms, forward_cpu_ms = median_ms(forward, repeats)
    both_ms, both_cpu_ms = median_ms(forward_backward, repeats)
    return {"forward_ms": forward_ms, "forward_cpu_ms": forward_cpu_ms,
            "forward_backward_ms": both_ms, "forward_backward_cpu_ms": both_cpu_ms}


def run(repeats: int = 5) -> dict[str, Any]:
    feats, rois = make_case()
    kernels = {"ours (PyTorch, embedding_bag)": roi_module.roi_align_torch}
    if roi_module.TORCHVISION_AVAILABLE:
        kernels["torchvision.ops.roi_align"] = roi_module._torchvision_roi_align
    default_threads = torch.get_num_threads()
    rows = []
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for out in (7, 14):
            for name, kernel in kernels.items():
                rows.append({"kernel": name, "output": f"{out}x{out}", "threads": threads,
                             **time_kernel(kernel, feats, rois, out, repeats)})
    torch.set_num_threads(default_threads)
    result = {
        "case": {"boxes": 512, "channels": 256, "map": "64x64", "sampling_ratio": 2, "aligned": True, "repeats": repeats},
        "torchvision": "available" if roi_module.TORCHVISION_AVAILABLE else "not importable here: only ours is timed",
        "rows": rows,
        "machine": machine(),
    }
    if roi_module.TORCHVISION_AVAILABLE:
        for row in rows:
            reference = next(r for r in rows if r["kernel"].startswith("torchvision") and r["output"] == row["output"]
                             and r["threads"] == row["threads"])
            row["x_torchvision_forward"] = round(row["forward_ms"] / reference["forward_ms"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks roi_align")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv or [])
    result = run(args.repeats)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="RoIAlign, 512 boxes, 256 channels, 64x64 map, sampling 2, aligned (CPU)")
    for column in ("kernel", "output", "threads", "forward ms (CPU ms)", "fwd+bwd ms (CPU ms)"):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(row["kernel"], row["output"], str(row["threads"]), f"{row['forward_ms']} ({row['forward_cpu_ms']})",
                      f"{row['forward_backward_ms']} ({row['forward_backward_cpu_ms']})")
    Console().print(table)
    print(f"torchvision: {result['torchvision']}")
    print(f"wrote {write_result(NAME, result)}")
    return 0
