"""Limits every row must respect before it reaches a parquet file.

A record can be valid JSON and still unwritable or absurd: a width of ``2**40`` does not fit the schema's
int32 column, a lone UTF-16 surrogate (``"\\ud800"``, which Python's json accepts) cannot be encoded as UTF-8
by the parquet writer, and a 50 MB caption is a corrupt file, not a caption. Each is caught here, per row,
as a counted skip naming the row, instead of failing the whole build at the write. The numbers are wide
enough for every real release (the largest Visual Genome image is 1,280 px on a side, the longest LLaVA answer
a few thousand characters).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from builders.errors import SkipRecord
from builders.placeholders import IMAGE_TOKEN, REGION_PATTERN

MAX_IMAGE_SIDE = 100_000  # pixels; also far below the int32 limit of the schema's width/height columns
MAX_TEXT_CHARS = 100_000  # characters in one text field (a turn, a label, a choice, a reference)
_SURROGATE = re.compile("[\ud800-\udfff]")


def image_side(value: Any, name: str, *, digits_allowed: bool = False) -> int:
    """``value`` as a width or height in ``1..MAX_IMAGE_SIDE``, or a :class:`SkipRecord` (``bad_image_size``).

    Numbers must be numbers: an integer, or a float with an integral value (``640.0``). ``"640"`` is accepted
    only with ``digits_allowed`` (MDETR's Flickr30K files write sizes as strings); ``True``, ``"abc"``,
    ``Infinity`` and ``NaN`` never are.
    """
    if isinstance(value, bool):
        raise SkipRecord("bad_image_size", f"{name}={value!r} is not a number")
    if isinstance(value, str) and digits_allowed and value.strip().isdigit() and value.strip().isascii():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise SkipRecord("bad_image_size", f"{name}={value!r} is not a whole number of pixels")
    if not 1 <= value <= MAX_IMAGE_SIDE:
        raise SkipRecord("bad_image_size", f"{name}={value} outside 1..{MAX_IMAGE_SIDE}")
    return value


def checked_name(value: Any, what: str) -> str:
    """A name that many rows will repeat (a category): a non-empty, writable string without placeholders.

    A bad category name would poison every row that lists the vocabulary, so it is refused once, at load
    (``bad_category``), and only the annotations of that category are lost.
    """
    if not isinstance(value, str) or not value.strip():
        raise SkipRecord("bad_category", f"{what} {value!r} is not a non-empty string")
    if len(value) > MAX_TEXT_CHARS or _SURROGATE.search(value) or IMAGE_TOKEN in value or REGION_PATTERN.search(value):
        raise SkipRecord("bad_category", f"{what} {value[:80]!r} is too long, not encodable or holds a placeholder")
    return value


def check_row_text(row: dict[str, Any]) -> None:
    """Every string of a row is UTF-8-encodable and at most ``MAX_TEXT_CHARS`` long; else a :class:`SkipRecord`.

    Runs on rows as :meth:`RegionBuilder.make_row` shapes them; wrong types are left to the schema check.
    """
    if _plainly_writable(row):
        return
    for field, text in _row_strings(row):
        if not isinstance(text, str):
            continue  # a wrong type is the schema's finding (builders.schema.validate)
        if len(text) > MAX_TEXT_CHARS:
            raise SkipRecord("text_too_long", f"{field} has {len(text)} characters (limit {MAX_TEXT_CHARS})")
        _check_encodable(field, text)
    if isinstance(row["meta"], str):
        _check_encodable("meta", row["meta"])


def _plainly_writable(row: dict[str, Any]) -> bool:
    """``True`` only when every text of the row is a ``str`` within the limits: the texts are checked joined
    (all under ``MAX_TEXT_CHARS`` together, or each; all ASCII, or free of surrogates), in C, not one by one.

    ``False`` (any non-string, a missing key, a long or non-ASCII text) says nothing: :func:`check_row_text`
    then walks the fields one by one and names the first bad one. tests/test_schema_fast_path.py checks that
    this accepts no row that the field-by-field check refuses.
    """
    try:
        regions, turns, meta = row["regions"], row["conversations"], row["meta"]
        texts = [row["id"], row["variant"], row["image_id"], row["image"], *[item["label"] for item in regions],
                 *[item["source_id"] for item in regions], *[item["value"] for item in turns], *row["choices"],
                 *row["references"]]
        joined = "".join(texts)  # a TypeError unless every text is a str
    except (TypeError, KeyError):
        return False
    if type(meta) is not str or (len(joined) > MAX_TEXT_CHARS and max(map(len, texts)) > MAX_TEXT_CHARS):
        return False
    return (joined.isascii() and meta.isascii()) or not (_SURROGATE.search(joined) or _SURROGATE.search(meta))


def _check_encodable(field: str, text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise SkipRecord("text_not_unicode", f"{field} holds a lone UTF-16 surrogate, which UTF-8 cannot encode")


def _row_strings(row: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The row's texts; ``meta`` and ``segmentation`` are JSON of any length (a crowd RLE can be long)."""
    for name in ("id", "variant", "image_id", "image"):
        yield name, row[name]
    for index, item in enumerate(row["regions"]):
        yield f"regions[{index}].label", item.get("label") if isinstance(item, dict) else None
        yield f"regions[{index}].source_id", item.get("source_id") if isinstance(item, dict) else None
    for index, item in enumerate(row["conversations"]):
        yield f"conversations[{index}]", item.get("value") if isinstance(item, dict) else None
    for name in ("choices", "references"):
        for index, text in enumerate(row[name]):
            yield f"{name}[{index}]", text
