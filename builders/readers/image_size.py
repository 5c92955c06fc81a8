"""Image sizes read from the image file itself, for sources whose annotations do not state them.

LLaVA-Instruct records name a COCO image but give no width or height, and the schema needs both (and the
detection boxes, normalised to [0, 1], need them to become pixels). Pillow reads only the file header here,
not the pixels, so this costs one small read per image.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from builders.errors import SkipRecord
from builders.limits import image_side


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path``; a missing or unreadable image is a skipped record."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError as exc:
        raise SkipRecord("image_missing", f"{path} does not exist (its size is needed)") from exc
    except Image.DecompressionBombError as exc:  # refused from the header, before any pixel is decoded
        raise SkipRecord("image_too_large", f"{path}: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkipRecord("image_unreadable", f"{path}: {exc}") from exc
    return image_side(width, f"{path} width"), image_side(height, f"{path} height")
