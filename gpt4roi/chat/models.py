"""What the chat needs from a model, and the models it ships with.

The chat talks to a :class:`ChatModel`: ``stream(row)`` takes one schema row (docs/design.md#schema) whose
last assistant turn is empty and yields the answer as text chunks. A model that only has the evaluators' batch
method ``generate(rows) -> list[str]`` (docs/design.md#model-protocol) is wrapped by :class:`GenerateAdapter`.

:class:`BoxGeometryModel` is a deterministic model that needs no weights: it answers from the row alone by
describing the geometry of the regions the last question refers to. It lets the page, the terminal chat and
their tests run anywhere; it does not look at the pixels and says so in its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from builders.boxes import box_iou
from builders.placeholders import region_refs


@runtime_checkable
class ChatModel(Protocol):
    """Anything the chat can ask: ``stream(row)`` yields the text of the row's last (empty) assistant turn."""

    def stream(self, row: Mapping[str, Any]) -> Iterator[str]: ...


class GenerateModel(Protocol):
    """The evaluators' generation protocol: one answer per row."""

    def generate(self, rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> list[str]: ...


class GenerateAdapter:
    """A :class:`ChatModel` over a model that only answers whole rows: the answer arrives as one chunk."""

    def __init__(self, model: GenerateModel, **generate_kwargs: Any):
        self.model = model
        self.generate_kwargs = generate_kwargs

    def stream(self, row: Mapping[str, Any]) -> Iterator[str]:
        answers = self.model.generate([row], **self.generate_kwargs)
        if len(answers) != 1 or not isinstance(answers[0], str):
            raise TypeError(f"{type(self.model).__name__}.generate returned {answers!r} for one row "
                            "(expected a list with one string)")
        yield answers[0]


def as_chat_model(model: Any, **generate_kwargs: Any) -> ChatModel:
    """``model`` itself when it can stream, else wrapped by :class:`GenerateAdapter`."""
    if isinstance(model, ChatModel):
        return model
    if callable(getattr(model, "generate", None)):
        return GenerateAdapter(model, **generate_kwargs)
    raise TypeError(f"{type(model).__name__} has neither stream(row) nor generate(rows)")


class BoxGeometryModel:
    """Answers with the geometry of the boxes the last question refers to (no pixels, no weights).

    For each referenced region: its corners, size, share of the image and where it lies; for two or more,
    how the first two are placed relative to each other and their overlap. It also reports the round number,
    so a test can see that the history reached the model. Chunks are the answer's words.
    """

    def stream(self, row: Mapping[str, Any]) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", self.answer(row))

    def answer(self, row: Mapping[str, Any]) -> str:
        turns = row["conversations"]
        question = turns[-2]["value"]
        width, height = int(row["width"]), int(row["height"])
        boxes = [list(map(float, region["bbox"])) for region in row["regions"]]
        refs = list(dict.fromkeys(region_refs(question)))
        round_number = len(turns) // 2
        lines = [f"Round {round_number}: the image is {width}x{height} pixels "
                 f"with {len(boxes)} region(s) in the conversation."]
        for k in refs:
            lines.append(_describe(k, boxes[k - 1], width, height))
        if len(refs) >= 2:
            a, b = refs[0], refs[1]
            lines.append(_relate(a, boxes[a - 1], b, boxes[b - 1]))
        if not refs:
            lines.append("The question refers to no region.")
        return " ".join(lines)


def _describe(k: int, box: Sequence[float], width: int, height: int) -> str:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    share = 100.0 * w * h / (width * height)
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    vertical = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    place = "centre" if (vertical, horizontal) == ("middle", "centre") else f"{vertical} {horizontal}"
    return (f"region{k} spans [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}], {w:.0f}x{h:.0f} px, "
            f"{share:.1f}% of the image, in the {place}.")


def _relate(a: int, box_a: Sequence[float], b: int, box_b: Sequence[float]) -> str:
    dx = (box_b[0] + box_b[2]) / 2 - (box_a[0] + box_a[2]) / 2
    dy = (box_b[1] + box_b[3]) / 2 - (box_a[1] + box_a[3]) / 2
    if abs(dx) >= abs(dy):
        where = "left of" if dx > 0 else "right of"
    else:
        where = "above" if dy > 0 else "below"
    return f"region{a} is {where} region{b} (IoU {box_iou(box_a, box_b):.2f})."
