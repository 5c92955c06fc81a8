"""RoIAlign: our vectorised PyTorch version against an independent per-sample loop and (if present) torchvision."""

from __future__ import annotations

import math

import pytest
import torch

from gpt4roi.modeling import roi_align as roi_module
from gpt4roi.modeling.roi_align import roi_align_torch


def _bilinear(plane: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One sample of a ``(C, H, W)`` map, written from the RoIAlign paper's description of the kernel."""
    height, width = plane.shape[-2:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return plane.new_zeros(plane.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * plane[:, y0, x0]
        + (1 - ly) * lx * plane[:, y0, x1]
        + ly * (1 - lx) * plane[:, y1, x0]
        + ly * lx * plane[:, y1, x1]
    )


def reference_roi_align(feats, rois, out, scale, ratio, aligned):
    """Loop over boxes, bins and samples; autograd through indexing gives the reference gradient."""
    results = []
    for roi in rois.tolist():
        batch, x1, y1, x2, y2 = roi
        off = 0.5 if aligned else 0.0
        sx, sy = x1 * scale - off, y1 * scale - off
        w, h = x2 * scale - off - sx, y2 * scale - off - sy
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        gy = ratio if ratio > 0 else math.ceil(h / out)
        gx = ratio if ratio > 0 else math.ceil(w / out)
        bh, bw = h / out, w / out
        plane = feats[int(batch)]
        cells = []
        for ph in range(out):
            row = []
            for pw in range(out):
                acc = plane.new_zeros(plane.shape[0])
                for iy in range(max(gy, 0)):
                    for ix in range(max(gx, 0)):
                        y = sy + ph * bh + (iy + 0.5) * bh / gy
                        x = sx + pw * bw + (ix + 0.5) * bw / gx
                        acc = acc + _bilinear(plane, y, x)
                row.append(acc / max(gy * gx, 1))
            cells.append(torch.stack(row, dim=-1))
        results.append(torch.stack(cells, dim=-2))
    return torch.stack(results)


def _case(seed: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 3, 9, 11, generator=generator, dtype=dtype)
    boxes = [
        [0, 1.0, 2.0, 30.0, 25.0],
        [1, -6.0, -4.0, 10.0, 8.0],  # partly outside the map (top-left)
        [1, 30.0, 20.0, 50.0, 44.0],  # partly outside (bottom-right)
        [0, 12.0, 12.0, 12.5, 12.4],  # smaller than a pixel: the aligned=False clamp matters
        [0, 20.0, 4.0, 14.0, 10.0],  # inverted width
        [1, 0.0, 0.0, 44.0, 36.0],  # the whole map
    ]
    return feats, torch.tensor(boxes, dtype=dtype)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [2, 1, -1])
def test_matches_reference_outputs_and_gradients(aligned, ratio):
    feats, rois = _case(0)
    scale, out = 0.25, 3
    mine_in = feats.clone().requires_grad_(True)
    ref_in = feats.clone().requires_grad_(True)
    mine = roi_align_torch(mine_in, rois, out, scale, ratio, aligned)
    ref = reference_roi_align(ref_in, rois, out, scale, ratio, aligned)
    assert mine.shape == (6, 3, out, out)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(mine)
    (mine * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(mine_in.grad, ref_in.grad, atol=1e-5, rtol=1e-5)
    assert mine_in.grad.abs().sum() > 0


def test_aligned_flag_changes_the_result():
    feats, rois = _case(1)
    a = roi_align_torch(feats, rois, 2, 0.25, 2, aligned=True)
    b = roi_align_torch(feats, rois, 2, 0.25, 2, aligned=False)
    assert not torch.allclose(a, b)


def test_list_of_boxes_equals_indexed_rois():
    feats, rois = _case(2)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(2)])
    torch.testing.assert_close(
        roi_align_torch(feats, per_image, (2, 3), 0.25, 2, True),
        roi_align_torch(feats, ordered, (2, 3), 0.25, 2, True),
    )


def test_float64_gradcheck():
    feats, rois = _case(3, torch.float64)
    feats = feats[:, :2, :6, :7].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: roi_align_torch(f, rois[:3], 2, 0.25, 2, True), (feats,))


def test_empty_boxes_and_bad_shapes():
    feats, _ = _case(4)
    assert roi_align_torch(feats, torch.zeros(0, 5), 2).shape == (0, 3, 2, 2)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align_torch(feats, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        roi_align_torch(feats, [torch.zeros(3)], 2)


@pytest.mark.skipif(not roi_module.TORCHVISION_AVAILABLE, reason="torchvision is not importable in this environment")
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [2, -1])
def test_matches_torchvision(aligned, ratio):
    feats, rois = _case(5)
    mine_in = feats.clone().requires_grad_(True)
    tv_in = feats.clone().requires_grad_(True)
    mine = roi_align_torch(mine_in, rois, 3, 0.25, ratio, aligned)
    theirs = roi_module._torchvision_roi_align(tv_in, rois, 3, 0.25, ratio, aligned)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(mine)
    (mine * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(mine_in.grad, tv_in.grad, atol=1e-5, rtol=1e-5)
