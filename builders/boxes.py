"""Box conventions.

The schema stores boxes as **xyxy, absolute pixels, 0-based continuous coordinates**: a box over pixel
columns 0..9 is ``x1=0, x2=10``. Every source convention is converted once, at read time, by one of the
functions here, and then checked and clipped by :func:`checked_box`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from builders.errors import SkipRecord

Box = list[float]


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """COCO / RefCOCO / Visual Genome ``[x, y, w, h]`` to ``[x, y, x + w, y + h]``."""
    x, y, w, h = _four_numbers(box)
    return [x, y, x + w, y + h]


def voc_to_xyxy(box: Sequence[float]) -> Box:
    """Flickr30K Entities / PASCAL VOC 1-based inclusive ``[xmin, ymin, xmax, ymax]`` to the schema.

    Pixel ``xmin`` (1-based) is column ``xmin - 1`` 0-based; the inclusive ``xmax`` column ends at ``xmax``.
    """
    x1, y1, x2, y2 = _four_numbers(box)
    return [x1 - 1, y1 - 1, x2, y2]


def normalized_to_xyxy(box: Sequence[float], width: float, height: float) -> Box:
    """LLaVA / detector boxes normalised to [0, 1] to absolute pixels."""
    x1, y1, x2, y2 = _four_numbers(box)
    return [x1 * width, y1 * height, x2 * width, y2 * height]


def xyxy_to_normalized(box: Sequence[float], width: float, height: float) -> Box:
    """Absolute xyxy pixels to [0, 1] (the inverse of :func:`normalized_to_xyxy`)."""
    x1, y1, x2, y2 = _four_numbers(box)
    return [x1 / width, y1 / height, x2 / width, y2 / height]


def union_box(boxes: Sequence[Sequence[float]]) -> Box:
    """The smallest xyxy box containing every box of ``boxes``."""
    if not boxes:
        raise ValueError("union_box needs at least one box")
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def checked_box(box: Sequence[float], width: float, height: float, *, min_size: float = 1.0) -> Box:
    """Validate an xyxy box against its image and clip it to the image.

    Raises :class:`SkipRecord` (reason ``bad_box_*``) for a non-finite coordinate, an inverted box, a box that
    lies entirely outside the image, or one under ``min_size`` px wide or high *after* clipping (a box that
    overhangs the border by all but a sliver is no region). A box that only overhangs the border is clipped.
    """
    x1, y1, x2, y2 = _four_numbers(box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise SkipRecord("bad_box_nonfinite", f"box {list(box)} has a non-finite coordinate")
    if x2 - x1 < min_size or y2 - y1 < min_size:
        raise SkipRecord("bad_box_degenerate", f"box {list(box)} is under {min_size} px wide or high")
    cx1, cy1 = max(0.0, x1), max(0.0, y1)
    cx2, cy2 = min(float(width), x2), min(float(height), y2)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        raise SkipRecord("bad_box_outside_image", f"box {list(box)} lies outside the {width}x{height} image")
    if cx2 - cx1 < min_size or cy2 - cy1 < min_size:
        raise SkipRecord("bad_box_degenerate", f"box {list(box)} is under {min_size} px wide or high once "
                                               f"clipped to the {width}x{height} image")
    return [cx1, cy1, cx2, cy2]


def _four_numbers(box: Sequence[float]) -> tuple[float, float, float, float]:
    """The first four entries of ``box`` as floats; numbers only (``"12"`` and ``true`` are not coordinates)."""
    if not isinstance(box, (list, tuple)) or len(box) < 4:
        raise SkipRecord("bad_box_format", f"expected 4 numbers, got {box!r}")
    values = box[:4]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise SkipRecord("bad_box_format", f"expected 4 numbers, got {box!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except OverflowError as exc:  # an integer beyond float range
        raise SkipRecord("bad_box_nonfinite", f"box {box!r} has a coordinate beyond float range") from exc
    return x1, y1, x2, y2
