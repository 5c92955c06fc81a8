"""Turning untrusted uploaded bytes into an image the chat can use, or a clear refusal.

The header is read first so that an oversized image is refused before its pixels are decoded (a small
compressed file can expand to gigabytes). EXIF orientation is applied, because browsers display photos
rotated by it: the boxes a user draws must be in the coordinates of the picture they see.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError


class ImageRejected(ValueError):
    """An upload that is not an image, or one over the limits; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 415):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """Upload limits: bytes of the file, pixels along either side, pixels in all."""

    max_bytes: int = 10 * 1024 * 1024
    max_side: int = 4096
    max_pixels: int = 16 * 1024 * 1024


def decode_image(data: bytes, limits: ImageLimits, name: str = "upload") -> Image.Image:
    """The RGB image in ``data``, upright; :class:`ImageRejected` when it is not one or is too large."""
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"{name}: the file is larger than the upload limit of {limits.max_bytes} bytes",
                            status=413)
    if not data:
        raise ImageRejected(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
                raise ImageRejected(
                    f"{name}: {width}x{height} pixels is over the limit of {limits.max_side} px per side "
                    f"and {limits.max_pixels} pixels in all", status=413)
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageRejected:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"{name}: not an image that can be read ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt files
        raise ImageRejected(f"{name}: the image is damaged and cannot be decoded ({exc})") from None
    return image.convert("RGB")
