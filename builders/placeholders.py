"""The placeholders of the schema: ``<image>`` and ``<regionK>`` (K = 1, 2, ...)."""

from __future__ import annotations

import re

IMAGE_TOKEN = "<image>"
REGION_PATTERN = re.compile(r"<region(\d+)>")


def region_token(k: int) -> str:
    """The placeholder of region ``k`` (1-based)."""
    return f"<region{k}>"


# More digits than any region count has: such a number (which ``int`` may even refuse past 4,300 digits) is read
# as this value, which names no region, so the schema rejects it as an unknown reference instead of crashing.
_BEYOND_ANY_REGION = 10**18


def region_refs(text: str) -> list[int]:
    """The 1-based region numbers referenced in ``text``, in order of appearance (with repeats)."""
    return [int(m) if len(m) < 18 else _BEYOND_ANY_REGION for m in REGION_PATTERN.findall(text)]


def strip_image_token(text: str) -> str:
    """``text`` without ``<image>`` and the newline that usually separates it from the question."""
    return text.replace(IMAGE_TOKEN + "\n", "").replace("\n" + IMAGE_TOKEN, "").replace(IMAGE_TOKEN, "").strip()


def with_image_prefix(text: str) -> str:
    """Put ``<image>`` at the start of a first human turn, wherever the source placed it."""
    return f"{IMAGE_TOKEN}\n{strip_image_token(text)}"
