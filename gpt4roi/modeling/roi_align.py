"""RoIAlign (He et al., Mask R-CNN) with torchvision's semantics, in plain vectorised PyTorch.

``roi_align`` dispatches to ``torchvision.ops.roi_align`` when torchvision imports; otherwise it runs
:func:`roi_align_torch`, which computes the same numbers (and, through autograd, the same input gradients).

Why it is fast without a custom kernel: a RoIAlign output bin is a weighted sum of ``grid_h * grid_w * 4``
feature-map pixels (the four bilinear corners of each sampling point). We compute, for every bin, those
pixel indices and weights once, and let ``F.embedding_bag`` (mode ``sum`` with per-sample weights) gather
and sum channel vectors from a channels-last copy of the map. The backward (RoIAlign's scatter of the
gradient back to the map) is the transposed gather, also done by ``embedding_bag``. Bilinear weights are separable in y and x, so they are computed
per axis and combined by broadcasting.

Semantics followed (torchvision ``roi_align``, CPU and CUDA kernels agree):
- a box is ``(batch_index, x1, y1, x2, y2)`` in input-image coordinates, scaled by ``spatial_scale``;
  ``aligned=True`` shifts it by -0.5 pixel (pixel centres at half-integers); ``aligned=False`` clamps the
  box's width and height to at least 1;
- each of the ``output_size`` bins averages a ``grid_h x grid_w`` regular grid of samples, with the grid
  fixed by ``sampling_ratio > 0`` or ``ceil(box size / output size)`` per box otherwise;
- a sample outside ``[-1, H] x [-1, W]`` contributes zero; inside, coordinates are clamped to the map and
  bilinearly interpolated; boxes receive no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # torchvision is optional: the suite does not require it.
    from torchvision.ops import roi_align as _torchvision_roi_align
except Exception:  # noqa: BLE001 - any import failure (missing, ABI mismatch) means "not available"
    _torchvision_roi_align = None

TORCHVISION_AVAILABLE = _torchvision_roi_align is not None


class _WeightedGather(torch.autograd.Function):
    """``out[b] = sum_j weight[b, j] * table[index[b, j]]``, with a backward that is a gather too.

    ``embedding_bag``'s own dense backward accumulates row by row after sorting; the same sort lets the
    transpose run as one more ``embedding_bag`` (one bag per table row, gathering the bins that used it),
    which is about twice as fast on CPU. Being built from differentiable ops, it also backpropagates twice.
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index, weight)
        ctx.rows = table.shape[0]
        return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, weight = ctx.saved_tensors
        flat = index.reshape(-1)
        order = torch.argsort(flat)
        bins = torch.div(order, index.shape[1], rounding_mode="floor")
        per_row = torch.zeros(ctx.rows, dtype=torch.long, device=flat.device).index_add_(0, flat, torch.ones_like(flat))
        offsets = per_row.cumsum(0) - per_row
        grad_table = F.embedding_bag(
            bins, grad.contiguous(), offsets=offsets, per_sample_weights=weight.reshape(-1)[order], mode="sum"
        )
        return grad_table, None, None


def _as_rois(boxes: torch.Tensor | list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``(K, 5)`` rois ``(batch_index, x1, y1, x2, y2)`` from either accepted box format."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for index, per_image in enumerate(boxes):
            if per_image.ndim != 2 or per_image.shape[-1] != 4:
                raise ValueError(f"roi_align: boxes[{index}] must have shape (L, 4), got {tuple(per_image.shape)}")
            column = torch.full_like(per_image[:, :1], float(index))
            parts.append(torch.cat([column, per_image], dim=1))
        if not parts:
            raise ValueError("roi_align: an empty list of per-image boxes was given")
        rois = torch.cat(parts, dim=0)
    else:
        rois = boxes
        if rois.ndim != 2 or rois.shape[-1] != 5:
            raise ValueError(f"roi_align: boxes must have shape (K, 5), got {tuple(rois.shape)}")
    return rois.detach().to(dtype)


def _axis_samples(
    start: torch.Tensor, length: torch.Tensor, grid: torch.Tensor, bins: int, max_grid: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear corner indices and weights along one axis.

    ``start``, ``length``, ``grid``: ``(K,)``. Returns ``low``, ``high`` (long) and ``w_low``, ``w_high``,
    each ``(K, bins, max_grid)``; samples beyond a box's own grid (adaptive sampling) get zero weight.
    """
    bin_size = (length / bins)[:, None, None]
    grid_f = grid.to(start.dtype)[:, None, None]
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]
    sample_index = torch.arange(max_grid, device=start.device, dtype=start.dtype)[None, None, :]
    coord = start[:, None, None] + bin_index * bin_size + (sample_index + 0.5) * bin_size / grid_f
    inside = (coord >= -1.0) & (coord <= size) & (sample_index < grid_f)
    coord = coord.clamp(min=0.0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(coord.dtype))
    keep = inside.to(coord.dtype)
    return low, high, (1.0 - frac) * keep, frac * keep


def roi_align_torch(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign in PyTorch: ``(N, C, H, W)`` map and ``K`` boxes -> ``(K, C, out_h, out_w)``.

    Same arguments and results as ``torchvision.ops.roi_align`` (the result is in channels-last memory format). An adaptive ``sampling_ratio <= 0`` needs
    the largest per-box grid as a Python number, so it cannot run on the ``meta`` device; a fixed ratio can.
    """
    if input.ndim != 4:
        raise ValueError(f"roi_align: input must be (N, C, H, W), got {tuple(input.shape)}")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    _, channels, height, width = input.shape
    coord_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    rois = _as_rois(boxes, coord_dtype)
    num_rois = rois.shape[0]
    if num_rois == 0:
        return input.new_zeros((0, channels, out_h, out_w))

    with torch.no_grad():
        offset = 0.5 if aligned else 0.0
        x1 = rois[:, 1] * spatial_scale - offset
        y1 = rois[:, 2] * spatial_scale - offset
        roi_w = rois[:, 3] * spatial_scale - offset - x1
        roi_h = rois[:, 4] * spatial_scale - offset - y1
        if not aligned:
            roi_w = roi_w.clamp(min=1.0)
            roi_h = roi_h.clamp(min=1.0)
        if sampling_ratio > 0:
            grid_h = torch.full((num_rois,), sampling_ratio, device=rois.device, dtype=torch.long)
            grid_w = grid_h
            max_h = max_w = sampling_ratio
        else:
            grid_h = torch.ceil(roi_h / out_h).long()
            grid_w = torch.ceil(roi_w / out_w).long()
            max_h = max(int(grid_h.max()), 1)
            max_w = max(int(grid_w.max()), 1)
        count = (grid_h * grid_w).clamp(min=1).to(coord_dtype)

        y_lo, y_hi, wy_lo, wy_hi = _axis_samples(y1, roi_h, grid_h, out_h, max_h, height)
        x_lo, x_hi, wx_lo, wx_hi = _axis_samples(x1, roi_w, grid_w, out_w, max_w, width)
        # (K, out_h, gy, 2) and (K, out_w, gx, 2): the two corners of each sample along each axis.
        y_idx = torch.stack([y_lo, y_hi], dim=-1)
        x_idx = torch.stack([x_lo, x_hi], dim=-1)
        wy = torch.stack([wy_lo, wy_hi], dim=-1) / count[:, None, None, None]
        wx = torch.stack([wx_lo, wx_hi], dim=-1)
        # Combine to (K, out_h, out_w, gy, 2, gx, 2): flat pixel index and product weight.
        base = rois[:, 0].long() * (height * width)
        index = (
            base[:, None, None, None, None, None, None]
            + y_idx[:, :, None, :, :, None, None] * width
            + x_idx[:, None, :, None, None, :, :]
        )
        weight = wy[:, :, None, :, :, None, None] * wx[:, None, :, None, None, :, :]
        per_bin = max_h * 2 * max_w * 2
        index = index.reshape(num_rois * out_h * out_w, per_bin)
        weight = weight.reshape(num_rois * out_h * out_w, per_bin).to(input.dtype)

    # Channels-last rows; explicitly contiguous (for N == 1 the reshape is a strided view, gathered slowly).
    table = input.permute(0, 2, 3, 1).reshape(-1, channels).contiguous()
    pooled = _WeightedGather.apply(table, index, weight)
    # (K, out_h, out_w, C) is already channels-last memory for (K, C, out_h, out_w): returned as such, without a
    # transposing copy (convolutions take channels-last input directly; values and shape are torchvision's).
    return pooled.view(num_rois, out_h, out_w, channels).permute(0, 3, 1, 2)


def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """torchvision's kernel when available (not on ``meta`` tensors), else :func:`roi_align_torch`."""
    if _torchvision_roi_align is not None and input.device.type != "meta":
        return _torchvision_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return roi_align_torch(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
