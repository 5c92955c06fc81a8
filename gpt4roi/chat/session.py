"""One conversation about boxes drawn on one image: the state behind the web page and the terminal chat.

A :class:`Session` holds the image, the boxes (numbered 1, 2, ... in the order they were drawn) and the
history of (question, answer) rounds. Each new question becomes one schema row (docs/design.md#schema): the
image, its size, the boxes as regions (xyxy, absolute pixels), and the whole conversation with ``<image>``
opening the first human turn, ``<regionK>`` in human turns and plain assistant turns, ending with the empty
assistant turn the model is asked to write. The model sees every earlier round, so follow-up questions work.

Numbering rules (the page shows the same numbers):

* a box keeps its number for the whole conversation; boxes drawn in a later round get the next numbers;
* a box becomes part of the conversation (*committed*) when a question that was answered refers to it or
  to a higher-numbered box; committed boxes cannot be moved or deleted (the history talks about them);
* the boxes not yet committed (*pending*) can be moved, resized and deleted; deleting one renumbers the
  pending boxes after it;
* every box sent to the model must be referred to somewhere in the conversation (the schema's rule, and what
  GPT4RoI needs: one region feature per mention), so a question may not skip a lower-numbered box that was
  never mentioned. Pending boxes numbered above every reference simply wait for a later round.
"""

from __future__ import annotations

import io
import json
import math
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from builders.boxes import checked_box
from builders.errors import SkipRecord
from builders.placeholders import IMAGE_TOKEN, REGION_PATTERN, region_refs, region_token
from builders.schema import validate

from .models import ChatModel

MAX_MESSAGE_CHARS = 4000
MIN_BOX_SIZE = 2.0  # pixels: a click without a drag must not become a box


@dataclass(frozen=True)
class ConversationLimits:
    """How big one conversation may grow: every box is a region feature and every round is resent to the model
    with the whole history, so both bound the work (and memory) one client can ask of the server."""

    max_boxes: int = 32
    max_rounds: int = 20


class ChatError(ValueError):
    """A request the conversation cannot take (shown to the user as is): the message says what to do."""


class ModelError(RuntimeError):
    """The model failed while answering; the round is not added to the history."""


@dataclass(frozen=True)
class Box:
    """One drawn box: its number (1-based, as in ``<regionK>``) and xyxy absolute pixel coordinates."""

    number: int
    xyxy: tuple[float, float, float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "xyxy": list(self.xyxy)}


class Session:
    """The state of one conversation; :meth:`stream` / :meth:`ask` get the model's next answer.

    ``model`` is anything with ``stream(row) -> Iterator[str]`` (see :mod:`gpt4roi.chat.models`).
    """

    def __init__(self, model: ChatModel, image: Image.Image | None = None, *, image_name: str = "image.png",
                 session_id: str | None = None, limits: ConversationLimits | None = None):
        self.model = model
        self.limits = limits or ConversationLimits()
        self.session_id = session_id or secrets.token_hex(8)
        self._image: Image.Image | None = None
        self._image_png: bytes = b""
        self.image_name = image_name
        self._boxes: list[tuple[float, float, float, float]] = []
        self._committed = 0
        self._history: list[tuple[str, str]] = []
        if image is not None:
            self.set_image(image, image_name)

    # --- image -------------------------------------------------------------------------------------------
    @property
    def image(self) -> Image.Image | None:
        return self._image

    @property
    def image_png(self) -> bytes:
        """The image as PNG bytes (what the row carries and what the page displays)."""
        return self._image_png

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image; a :class:`ChatError` when there is none."""
        return self._require_image().size

    def set_image(self, image: Image.Image, name: str = "image.png") -> None:
        """Start a new conversation about ``image`` (boxes and history are cleared)."""
        self._image = image.convert("RGB")
        buffer = io.BytesIO()
        self._image.save(buffer, format="PNG")
        self._image_png = buffer.getvalue()
        self.image_name = name
        self.clear()

    def _require_image(self) -> Image.Image:
        if self._image is None:
            raise ChatError("no image yet: upload an image or pick an example first")
        return self._image

    # --- boxes -------------------------------------------------------------------------------------------
    @property
    def boxes(self) -> list[Box]:
        return [Box(k, xyxy) for k, xyxy in enumerate(self._boxes, start=1)]

    @property
    def committed(self) -> int:
        """How many boxes (1..committed) are part of the conversation and therefore fixed."""
        return self._committed

    def add_box(self, xyxy: Sequence[float]) -> int:
        """Add a box (xyxy image pixels, clipped to the image) and return its number."""
        self._require_room(len(self._boxes) + 1)
        self._boxes.append(self._checked(xyxy, len(self._boxes) + 1))
        return len(self._boxes)

    def move_box(self, number: int, xyxy: Sequence[float]) -> None:
        """Move or resize a pending box."""
        self._require_pending(number, "moved")
        self._boxes[number - 1] = self._checked(xyxy, number)

    def delete_box(self, number: int) -> None:
        """Delete a pending box; the pending boxes after it move down one number."""
        self._require_pending(number, "deleted")
        del self._boxes[number - 1]

    def set_boxes(self, boxes: Sequence[Sequence[float]]) -> None:
        """Replace the boxes by the page's list: the committed boxes must come first, unchanged."""
        if len(boxes) < self._committed:
            raise ChatError(f"boxes 1-{self._committed} are part of the conversation and cannot be removed; "
                            "clear the conversation to start over")
        self._require_room(len(boxes))
        checked = [self._checked(box, k) for k, box in enumerate(boxes, start=1)]
        for k in range(self._committed):
            if any(abs(a - b) > 0.5 for a, b in zip(checked[k], self._boxes[k], strict=True)):
                raise ChatError(f"box {k + 1} is part of the conversation and cannot be changed; "
                                "clear the conversation to start over")
        self._boxes = [*self._boxes[: self._committed], *checked[self._committed:]]

    def _require_room(self, count: int) -> None:
        if count > self.limits.max_boxes:
            raise ChatError(f"{count} boxes: at most {self.limits.max_boxes} boxes per image; delete some boxes")

    def _checked(self, xyxy: Sequence[float], number: int) -> tuple[float, float, float, float]:
        width, height = self.size
        try:
            values = [float(v) for v in xyxy]
        except (TypeError, ValueError):
            raise ChatError(f"box {number}: expected four numbers x1 y1 x2 y2, got {xyxy!r}") from None
        if len(values) != 4:
            raise ChatError(f"box {number}: expected four numbers x1 y1 x2 y2, got {len(values)}")
        try:
            x1, y1, x2, y2 = checked_box(values, width, height, min_size=MIN_BOX_SIZE)
        except SkipRecord as exc:
            raise ChatError(f"box {number}: {exc.detail}") from None
        return (x1, y1, x2, y2)

    def _require_pending(self, number: int, action: str) -> None:
        if not 1 <= number <= len(self._boxes):
            raise ChatError(f"there is no box {number} (boxes: {_numbers_text(len(self._boxes))})")
        if number <= self._committed:
            raise ChatError(f"box {number} is part of the conversation and cannot be {action}; "
                            "clear the conversation to start over")

    # --- conversation ------------------------------------------------------------------------------------
    @property
    def history(self) -> list[tuple[str, str]]:
        """The answered rounds as (question, answer), oldest first."""
        return list(self._history)

    def clear(self) -> None:
        """Forget the boxes and the history; keep the image."""
        self._boxes = []
        self._committed = 0
        self._history = []

    def row(self, message: str) -> dict[str, Any]:
        """The schema row asking the model for the answer to ``message`` (validated; the last turn is empty).

        Raises :class:`ChatError` for an empty or over-long message, no image, a reference to a box that does
        not exist, or a box that would be sent without ever being referred to.
        """
        message = message.strip()
        if not message:
            raise ChatError("the message is empty")
        if len(message) > MAX_MESSAGE_CHARS:
            raise ChatError(f"the message has {len(message)} characters; the limit is {MAX_MESSAGE_CHARS}")
        if IMAGE_TOKEN in message:
            raise ChatError(f"{IMAGE_TOKEN} is added by the chat itself; remove it from the message")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry a lone surrogate; no tokenizer or file takes one
            raise ChatError("the message holds a broken character (an unpaired surrogate); retype it") from None
        if len(self._history) >= self.limits.max_rounds:
            raise ChatError(f"this conversation has reached its limit of {self.limits.max_rounds} questions; "
                            "clear the conversation to start over")
        width, height = self.size
        refs = region_refs(message)
        missing = sorted({k for k in refs if not 1 <= k <= len(self._boxes)})
        if missing:
            raise ChatError(f"{', '.join(map(region_token, missing))} refers to a box that does not exist "
                            f"(boxes: {_numbers_text(len(self._boxes))})")
        n_regions = max([self._committed, *refs])
        mentioned = set(refs).union(*(region_refs(q) for q, _ in self._history))
        unmentioned = [k for k in range(1, n_regions + 1) if k not in mentioned]
        if unmentioned:
            names = ", ".join(map(region_token, unmentioned))
            raise ChatError(f"box(es) {', '.join(map(str, unmentioned))} would be sent to the model without "
                            f"being referred to: mention {names} in the message or delete the box(es)")
        turns: list[dict[str, str]] = []
        for question, answer in [*self._history, (message, "")]:
            turns.append({"from": "human", "value": question})
            turns.append({"from": "gpt", "value": answer})
        turns[0]["value"] = f"{IMAGE_TOKEN}\n{turns[0]['value']}"
        row = {
            "id": f"chat:test:{self.session_id}:{len(self._history)}",
            "source": "chat",
            "variant": "",
            "task": "chat",
            "split": "test",
            "image": {"path": self.image_name, "bytes": self._image_png},
            "image_id": self.image_name,
            "width": width,
            "height": height,
            "regions": [
                {"bbox": list(box), "segmentation": "", "label": "", "source_id": f"box{k}"}
                for k, box in enumerate(self._boxes[:n_regions], start=1)
            ],
            "conversations": turns,
            "choices": [],
            "label": -1,
            "references": [],
            "meta": json.dumps({"session": self.session_id, "round": len(self._history) + 1}),
        }
        validate(row)
        return row

    def stream(self, message: str) -> Iterator[str]:
        """Check ``message`` now (raising :class:`ChatError`), then stream the model's answer.

        The round joins the history, and the boxes it sends become fixed, only when the answer is complete;
        a failure of the model raises :class:`ModelError` and leaves the session as it was.
        """
        row = self.row(message)
        return self._answer(message.strip(), row)

    def ask(self, message: str) -> str:
        """The model's whole answer to ``message`` (see :meth:`stream`)."""
        return "".join(self.stream(message))

    def _answer(self, message: str, row: Mapping[str, Any]) -> Iterator[str]:
        chunks: list[str] = []
        try:
            for chunk in self.model.stream(row):
                chunks.append(chunk)
                yield chunk
        except Exception as exc:  # any model failure becomes one clear error for the page
            raise ModelError(f"the model failed: {type(exc).__name__}: {exc}") from exc
        # Assistant turns name regions in plain text (schema rule): keep a stray placeholder out of the history.
        answer = REGION_PATTERN.sub(r"region\1", "".join(chunks)).strip()
        self._history.append((message, answer))
        self._committed = len(row["regions"])


def _numbers_text(count: int) -> str:
    return "none drawn" if count == 0 else ("1" if count == 1 else f"1-{count}")


def parse_box(text: str) -> list[float]:
    """Four coordinates typed as ``x1 y1 x2 y2`` (commas and brackets allowed), for the terminal chat."""
    cleaned = text.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        values = [float(v) for v in cleaned]
    except ValueError:
        raise ChatError(f"expected four numbers x1 y1 x2 y2, got {text!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ChatError(f"expected four finite numbers x1 y1 x2 y2, got {text!r}")
    return values
