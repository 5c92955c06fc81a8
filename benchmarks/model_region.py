"""The region module's cost per image: FLOPs at full size (meta device, no memory) and CPU time.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` running the full-size module on ``meta``
tensors (convolutions and matrix products; RoIAlign's gathers and the GroupNorms are not counted, and are
small beside the convolutions). Wall and process CPU time (the machine may be shared) are measured for the tiny config and a mid-size one (ViT-B-like
width, a 64/32/16/8 pyramid of 256 channels). Inputs are random patch tokens, i.e. the CLIP tower's
output; the tower and the LLM are not included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._measure import machine, write_result
from gpt4roi.modeling.configuration_gpt4roi import GPT4RoIConfig
from gpt4roi.modeling.region_module import RegionFeatureModule

NAME = "model_region"
CONF = Path(__file__).resolve().parent.parent / "conf" / "architecture"

MID = {
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                      "image_size": 224, "patch_size": 14},
    "text_config": {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 1, "num_attention_heads": 16},
    "region_feature_layers": [5, 7, 9, 11],
    "region_pyramid_sizes": [64, 32, 16, 8],
    "region_embed_dim": 256,
    "region_norm_groups": 32,
    "roi_output_size": 14,
    "region_hidden_size": 512,
    "box_hidden_size": 128,
}


def configs() -> dict[str, GPT4RoIConfig]:
    seven_b = yaml.safe_load((CONF / "gpt4roi_7b.yaml").read_text())["region"]
    tiny = yaml.safe_load((CONF / "tiny.yaml").read_text())
    return {
        "full (gpt4roi_7b)": GPT4RoIConfig(**seven_b),
        "mid": GPT4RoIConfig(**MID),
        "tiny": GPT4RoIConfig(vision_config=tiny["vision"], text_config=tiny["text"], **tiny["region"]),
    }


def inputs(config: GPT4RoIConfig, boxes: int, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = None if device == "meta" else torch.Generator().manual_seed(0)
    count = config.num_image_tokens
    tokens = [torch.randn(1, count, config.vision_config.hidden_size, generator=generator, device=device)
              for _ in config.region_feature_layers]
    if device == "meta":
        return tokens, [torch.empty(boxes, 4, device=device)]
    corner = torch.rand(boxes, 2, generator=generator) * 0.6
    return tokens, [torch.cat([corner, corner + 0.1 + torch.rand(boxes, 2, generator=generator) * 0.3], dim=1)]


def full_size_flops(config: GPT4RoIConfig, boxes: int) -> dict[str, float]:
    with torch.device("meta"):
        module = RegionFeatureModule(config)
    tokens, box_list = inputs(config, boxes, "meta")
    with FlopCounterMode(display=False) as forward_counter:
        out = module(tokens, box_list)
    with FlopCounterMode(display=False) as backward_counter:
        out.sum().backward()
    forward, backward = forward_counter.get_total_flops(), backward_counter.get_total_flops()
    return {"boxes": boxes, "forward_gflop": round(forward / 1e9, 1), "backward_gflop": round(backward / 1e9, 1),
            "forward_backward_gflop": round((forward + backward) / 1e9, 1)}


def cpu_time(config: GPT4RoIConfig, boxes: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    module = RegionFeatureModule(config)
    tokens, box_list = inputs(config, boxes, "cpu")
    times, cpu = [], []
    for index in range(repeats + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        module(tokens, box_list).sum().backward()
        if index:  # the first run warms up
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        module.zero_grad(set_to_none=True)
    return {"boxes": boxes, "parameters": sum(p.numel() for p in module.parameters()), "threads": torch.get_num_threads(),
            "forward_backward_ms": round(1000 * statistics.median(times), 1),
            "cpu_ms": round(1000 * statistics.median(cpu), 1)}


def run(repeats: int = 3) -> dict[str, Any]:
    table = configs()
    full = table["full (gpt4roi_7b)"]
    with torch.device("meta"):
        parameters = sum(p.numel() for p in RegionFeatureModule(full).parameters())
    flops = [full_size_flops(full, boxes) for boxes in (1, 8)]
    per_box = round((flops[1]["forward_backward_gflop"] - flops[0]["forward_backward_gflop"]) / 7, 1)
    default_threads = torch.get_num_threads()
    timings: dict[str, list[dict[str, Any]]] = {"tiny": [], "mid": []}
    for threads in sorted({default_threads, 1}):
        torch.set_num_threads(threads)
        for name, rows in timings.items():
            rows += [cpu_time(table[name], boxes, repeats) for boxes in (1, 8)]
    torch.set_num_threads(default_threads)
    return {"full_size": {"parameters": parameters, "flops": flops, "forward_backward_gflop_per_extra_box": per_box},
            "cpu": timings, "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks model_region")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv or [])
    result = run(args.repeats)
    from rich.console import Console
    from rich.table import Table

    full = result["full_size"]
    flops = Table(title=f"region module at full size ({full['parameters']:,} parameters), FLOPs per image, meta device")
    for column in ("boxes", "forward GFLOP", "backward GFLOP", "fwd+bwd GFLOP"):
        flops.add_column(column)
    for row in full["flops"]:
        flops.add_row(str(row["boxes"]), str(row["forward_gflop"]), str(row["backward_gflop"]), str(row["forward_backward_gflop"]))
    timing = Table(title="region module forward + backward per image, CPU")
    for column in ("config", "parameters", "boxes", "threads", "wall ms", "CPU ms"):
        timing.add_column(column)
    for name, rows in result["cpu"].items():
        for row in rows:
            timing.add_row(name, f"{row['parameters']:,}", str(row["boxes"]), str(row["threads"]), str(row["forward_backward_ms"]),
                           str(row["cpu_ms"]))
    console = Console()
    console.print(flops)
    console.print(f"each extra box: {full['forward_backward_gflop_per_extra_box']} GFLOP forward + backward")
    console.print(timing)
    print(f"wrote {write_result(NAME, result)}")
    return 0
