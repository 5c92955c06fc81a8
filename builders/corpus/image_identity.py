"""Canonical image identity across releases, and perceptual hashes of pixels.

The same photograph reaches a corpus under many names: COCO id 581857 is ``COCO_train2014_000000581857.jpg``
in RefCOCO, ``train2017/000000581857.jpg`` in COCO 2017 and LLaVA-Instruct, and a Visual Genome image whose
``image_data.json`` record has ``coco_id: 581857``; Flickr30K Entities names images by their Flickr photo id,
which Visual Genome records as ``flickr_id``. :func:`image_keys` maps a row to the set of identities it
carries (``coco:<id>``, ``flickr:<id>``, ``vg:<id>``, ...), so that two rows show the same picture when their
sets intersect.

Renamed or re-encoded copies defeat ids; :func:`perceptual_hash` (average or difference hash, 64 bits, after
Krawetz's "Looks like it" description) catches those, and :class:`HashIndex` finds hashes within a Hamming
distance by the pigeonhole rule (``d + 1`` bands: two hashes at distance ``<= d`` agree on one band).
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable
from pathlib import Path

# Sources whose ``image_id`` is a COCO image id (RefCOCO/+/g are COCO train2014, LLaVA-Instruct COCO train2017).
COCO_ID_SOURCES = frozenset({"coco", "refcoco", "refcoco+", "refcocog", "llava"})
FLICKR_ID_SOURCES = frozenset({"flickr30k"})
_COCO_2014 = re.compile(r"COCO_(?:train|val|test)2014_(\d+)\.\w+$")
_COCO_2017 = re.compile(r"(?:^|/)(?:train|val|test|unlabeled)2017/(\d{12})\.\w+$")
_FLICKR30K = re.compile(r"(?:^|/)flickr30k[-_]images/(\d+)\.\w+$")
_META_KEYS = {"coco_id": "coco", "coco_image_id": "coco", "flickr_id": "flickr", "flickr30k_id": "flickr"}
HASH_KINDS = ("average", "difference")


@functools.lru_cache(maxsize=1 << 16)
def image_keys(source: str, image_path: str | None, image_id: str, meta: str) -> frozenset[str]:
    """Every canonical identity of a row's image (never empty: falls back to ``<source>:<image_id>``).

    Cached: the rows of one image (Visual Genome, VCR, RefCOCO have many) ask for the same keys in a row.
    """
    keys: set[str] = set()
    if meta and ("coco" in meta or "flickr" in meta):
        keys.update(_meta_keys(meta))
    if image_path:
        for pattern, space in ((_COCO_2014, "coco"), (_COCO_2017, "coco"), (_FLICKR30K, "flickr")):
            match = pattern.search(image_path)
            if match:
                keys.add(f"{space}:{int(match.group(1))}")
    if image_id.isdigit():
        if source in COCO_ID_SOURCES:
            keys.add(f"coco:{int(image_id)}")
        elif source in FLICKR_ID_SOURCES:
            keys.add(f"flickr:{int(image_id)}")
    keys.add(f"{source}:{image_id}" if image_id else f"{source}:{image_path}")
    return frozenset(keys)


def primary_key(keys: frozenset[str]) -> str:
    """One representative identity (``coco:`` / ``flickr:`` sort before source-local ids)."""
    return min(keys)


def _meta_keys(meta: str) -> Iterable[str]:
    try:
        data = json.loads(meta)
    except json.JSONDecodeError:
        return ()
    if not isinstance(data, dict):
        return ()
    keys = []
    for name, space in _META_KEYS.items():
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit():
            keys.append(f"{space}:{int(value)}")
    return keys


def perceptual_hash(image: bytes | str | Path, kind: str = "difference") -> int:
    """A 64-bit perceptual hash of an image file or its bytes.

    ``average``: 8x8 grey thumbnail, bit set where a pixel is above the mean. ``difference``: 9x8 thumbnail,
    bit set where a pixel is brighter than its right neighbour. Both survive re-encoding and resizing.
    """
    from PIL import Image

    if kind not in HASH_KINDS:
        raise ValueError(f"unknown perceptual hash {kind!r}; expected one of {HASH_KINDS}")
    source = io.BytesIO(image) if isinstance(image, bytes) else image
    with Image.open(source) as opened:
        size = (9, 8) if kind == "difference" else (8, 8)
        grey = opened.convert("L").resize(size, Image.Resampling.LANCZOS)
        pixels = list(grey.getdata())
    if kind == "average":
        mean = sum(pixels) / len(pixels)
        bits = [value > mean for value in pixels]
    else:
        bits = [pixels[row * 9 + col] > pixels[row * 9 + col + 1] for row in range(8) for col in range(8)]
    return sum(1 << index for index, bit in enumerate(bits) if bit)


class HashIndex:
    """Perceptual hashes with payloads, searchable within a Hamming distance ``max_distance``."""

    def __init__(self, max_distance: int = 0):
        if not 0 <= max_distance < 16:
            raise ValueError(f"max_distance must be in [0, 16), got {max_distance}")
        self.max_distance = max_distance
        self._bands = max_distance + 1
        self._width = 64 // self._bands
        self._buckets: dict[tuple[int, int], list[tuple[int, Hashable]]] = defaultdict(list)

    def _band_values(self, value: int) -> list[tuple[int, int]]:
        mask = (1 << self._width) - 1
        return [(band, (value >> (band * self._width)) & mask) for band in range(self._bands)]

    def add(self, value: int, payload: Hashable) -> None:
        for band in self._band_values(value):
            self._buckets[band].append((value, payload))

    def near(self, value: int) -> list[Hashable]:
        """Payloads of stored hashes within ``max_distance`` bits of ``value`` (each payload once)."""
        found: dict[object, None] = {}
        for band in self._band_values(value):
            for stored, payload in self._buckets.get(band, ()):
                if (stored ^ value).bit_count() <= self.max_distance:
                    found[payload] = None
        return list(found)
