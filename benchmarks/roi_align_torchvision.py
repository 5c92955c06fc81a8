"""Our RoIAlign against torchvision's CPU kernel: agreement (outputs and gradients) and speed.

torchvision cannot be imported beside the project's pinned torch 2.13.0, so this script is standalone: it
loads ``gpt4roi/modeling/roi_align.py`` by file path and needs only ``torch`` + ``torchvision``. Run it in a
side environment, e.g.::

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /tmp/tv/bin/python benchmarks/roi_align_torchvision.py

Under ``python -m benchmarks`` (the project's venv) it prints that instruction and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "roi_align_torchvision.json"


def _ours():
    spec = importlib.util.spec_from_file_location("roi_align_file", ROOT / "gpt4roi" / "modeling" / "roi_align.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.roi_align_torch


def agreement(ours: Callable, reference: Callable) -> float:
    """Largest |difference| of outputs and input gradients over aligned True/False and sampling 1..3."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for aligned in (True, False):
        for sampling in (1, 2, 3):
            feats = torch.randn(2, 8, 20, 24, generator=generator)
            xy = torch.rand(30, 2, generator=generator) * 18
            wh = 0.5 + torch.rand(30, 2, generator=generator) * 10
            rois = torch.cat([torch.randint(0, 2, (30, 1), generator=generator).float(), xy, xy + wh], 1)
            a, b = feats.clone().requires_grad_(), feats.clone().requires_grad_()
            out_a = ours(a, rois, (7, 7), 0.5, sampling, aligned)
            out_b = reference(b, rois, (7, 7), 0.5, sampling, aligned)
            weights = torch.randn(out_b.shape, generator=generator)
            (out_a * weights).sum().backward()
            (out_b * weights).sum().backward()
            worst = max(worst, (out_a - out_b).abs().max().item(), (a.grad - b.grad).abs().max().item())
    return worst


def cpu_ms(step: Callable[[], object], repeats: int = 7) -> float:
    step()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        step()
        times.append(time.process_time() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    try:
        import torchvision
    except Exception as exc:  # the project's venv: torchvision does not import beside torch 2.13.0
        print(f"torchvision is not importable here ({type(exc).__name__}); run this file in a side venv:")
        print(__doc__.split("::", 1)[1].split("Under", 1)[0].rstrip())
        return 0
    torch.set_num_threads(1)
    ours, reference = _ours(), torchvision.ops.roi_align
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 256, 64, 64, generator=generator)
    xy = torch.rand(512, 2, generator=generator) * 56
    wh = 2 + torch.rand(512, 2, generator=generator) * 46
    rois = torch.cat([torch.zeros(512, 1), xy, torch.minimum(xy + wh, torch.tensor(64.0))], 1)
    result = {"case": "512 boxes, 256 channels, 64x64 map, sampling 2, aligned, 1 thread, CPU ms",
              "torch": torch.__version__, "torchvision": torchvision.__version__,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "max_abs_difference": agreement(ours, reference), "timings": {}}
    for size in (7, 14):
        for name, function in (("ours", ours), ("torchvision", reference)):
            def forward_backward(function=function, size=size):
                leaf = feats.detach().requires_grad_()
                function(leaf, rois, (size, size), 1.0, 2, True).sum().backward()
            result["timings"][f"{size}x{size}/{name}"] = {
                "forward": round(cpu_ms(lambda function=function, size=size: function(feats, rois, (size, size), 1.0, 2, True)), 1),
                "forward_backward": round(cpu_ms(forward_backward), 1),
            }
        ours_t, ref_t = result["timings"][f"{size}x{size}/ours"], result["timings"][f"{size}x{size}/torchvision"]
        print(f"{size}x{size}: ours {ours_t['forward']} / {ours_t['forward_backward']} ms, torchvision "
              f"{ref_t['forward']} / {ref_t['forward_backward']} ms (forward / forward+backward); "
              f"ratio {ours_t['forward_backward'] / ref_t['forward_backward']:.2f}x")
    print(f"max |difference| of outputs and gradients: {result['max_abs_difference']:.2e}")
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
