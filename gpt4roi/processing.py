"""``GPT4RoIProcessor``: schema rows -> GPT4RoI model inputs (token ids, exact label masks, pixels, boxes).

Text follows GPT4RoI's LLaVA "v0" conversation template (:mod:`gpt4roi.conversation`): the system message
and ``"\\n\\n"``, then ``"### " + role + ": " + text + "\\n"`` per turn with roles ``Human`` /
``Assistant``. What is learnt is each assistant message and the ``"\\n###"`` that ends it (the newline and the stop marker, which doubles as
the start of the next turn's header), nothing else. The text is tokenised as a sequence of segments, each
either masked or supervised, so the label boundaries are exact by construction (GPT4RoI's own mask drifts
one token per turn); prompts for generation and scoring are cut from the very same segments.

Regions: in human turns ``<regionK>`` becomes ``region{K} <roi>`` at its first mention and ``region{K}``
afterwards; the boxes are listed in order of first mention, so the k-th ``<roi>`` of a sequence is its
k-th box. ``<image>`` becomes ``<im_start>`` + ``<im_patch>`` x N + ``<im_end>``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from builders.errors import SkipRecord
from builders.placeholders import IMAGE_TOKEN, REGION_PATTERN
from builders.readers.paths import resolve_under

from .conversation import ASSISTANT_ROLE, ROLE_NAMES, STOP_MARKER, SYSTEM_MESSAGE
from .tokenizer import IMAGE_END_TOKEN, IMAGE_PATCH_TOKEN, IMAGE_START_TOKEN, ROI_TOKEN

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IGNORE_INDEX = -100
PROCESSOR_FILE = "gpt4roi_processor.json"
#: ``square``: one bicubic resize to the tower's square input (ours); ``clip_short_side``: GPT4RoI's own, CLIP's
#: bicubic resize of the short side to the input size (no crop), normalise, then a bilinear resize to the square
#: (``F.interpolate``, as in its ``gpt4roi/datasets/*.py``).
RESIZE_MODES = ("square", "clip_short_side")


class RowInputError(ValueError):
    """A row cannot become model input; the message names the row id and what was expected."""

    def __init__(self, row_id: str, problem: str):
        super().__init__(f"row {row_id!r}: {problem}")
        self.row_id = row_id


@dataclass
class Segment:
    """A piece of the rendered text; ``supervised`` pieces are the ones the loss sees."""

    text: str
    supervised: bool


@dataclass
class RenderedTurn:
    """One turn's segments and the regions (0-based) whose first mention it holds, in order."""

    segments: list[Segment]
    new_regions: list[int]
    role: str


@dataclass
class EncodedRow:
    """One row ready for collation."""

    row_id: str
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor
    boxes: torch.Tensor
    dropped_turns: int = 0
    regions: list[int] = field(default_factory=list)


def render_turns(row: Mapping[str, Any], image_span: str, roi_token: str = ROI_TOKEN) -> list[RenderedTurn]:
    """The conversation of ``row`` as per-turn segments of the v0 template (see the module docstring).

    ``roi_token``: the region placeholder's spelling (``<roi>`` in our models, ``<bbox>`` in converted official ones).
    """
    row_id = str(row.get("id", "<no id>"))
    regions = row.get("regions") or []
    seen: list[int] = []

    def mention(match) -> str:
        number = int(match.group(1))
        if not 1 <= number <= len(regions):
            raise RowInputError(row_id, f"<region{number}> refers to a region the row does not have ({len(regions)} regions)")
        if number - 1 in seen:
            return f"region{number}"
        seen.append(number - 1)
        return f"region{number} {roi_token}"

    turns: list[RenderedTurn] = []
    previous_role = None
    for index, turn in enumerate(row.get("conversations") or []):
        role = turn.get("from")
        if role not in ROLE_NAMES:
            raise RowInputError(row_id, f"turn {index} has role {role!r}; expected 'human' or 'gpt'")
        value = str(turn.get("value", ""))
        if IMAGE_TOKEN in value and not (index == 0 and role == "human" and value.count(IMAGE_TOKEN) == 1):
            raise RowInputError(row_id, f"{IMAGE_TOKEN} may appear only once, in the first human turn (turn {index})")
        before = len(seen)
        if role == "human":
            value = REGION_PATTERN.sub(mention, value).replace(IMAGE_TOKEN, image_span)
        else:
            value = REGION_PATTERN.sub(lambda m: f"region{m.group(1)}", value)
        # After an assistant turn, its supervised "\n###" already opened this turn's header.
        header = (" " if previous_role == "gpt" else f"{STOP_MARKER} ") + ROLE_NAMES[role] + ": "
        if role == "human":
            segments = [Segment(header + value + "\n", False)]
        else:
            segments = [Segment(header, False), Segment(value + "\n" + STOP_MARKER, True)]
        turns.append(RenderedTurn(segments, seen[before:], role))
        previous_role = role
    return turns


def _joined(pieces: Sequence[tuple[list[int], list[int]]]) -> tuple[list[int], list[int]]:
    """Token ids and labels of consecutive pieces of one sequence, concatenated in order."""
    ids: list[int] = []
    labels: list[int] = []
    for piece_ids, piece_labels in pieces:
        ids += piece_ids
        labels += piece_labels
    return ids, labels


def load_image(row: Mapping[str, Any], image_root: str | Path | None) -> Image.Image:
    """The row's image as RGB: embedded bytes, or a path resolved (safely) under ``image_root``."""
    row_id = str(row.get("id", "<no id>"))
    image = row.get("image")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    data, path = None, None
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
    elif isinstance(image, str):
        path = image
    if data:
        try:
            return Image.open(io.BytesIO(data)).convert("RGB")
        except OSError as error:
            raise RowInputError(row_id, f"embedded image bytes are not a readable image ({error})") from error
    if not path:
        raise RowInputError(row_id, "has no image (expected a path, {path, bytes} or a PIL image)")
    if image_root is None:
        raise RowInputError(row_id, f"image path {path!r} needs an image_root to resolve against")
    try:
        resolved = resolve_under(image_root, path)
    except SkipRecord as error:
        raise RowInputError(row_id, f"image path refused: {error.detail}") from error
    if not resolved.is_file():
        raise RowInputError(row_id, f"image file {resolved} does not exist")
    try:
        with Image.open(resolved) as opened:
            return opened.convert("RGB")
    except OSError as error:
        raise RowInputError(row_id, f"image file {resolved} is not a readable image ({error})") from error


class GPT4RoIProcessor:
    """Turns schema rows into batches for :class:`~gpt4roi.modeling.GPT4RoIForCausalLM`.

    ``processor(rows)`` gives a training batch (right-padded, with labels); ``processor(rows,
    generation=True)`` a left-padded prompt batch that ends with ``"### Assistant: "`` (a trailing assistant
    turn, the reference answer, is left out).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int,
        num_image_tokens: int,
        max_length: int = 2048,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        image_root: str | Path | None = None,
        roi_token: str = ROI_TOKEN,
        resize: str = "square",
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("GPT4RoIProcessor: the tokenizer needs a padding token (see tokenizer.add_multimodal_tokens)")
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.max_length = int(max_length)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.image_root = image_root
        if resize not in RESIZE_MODES:
            raise ValueError(f"GPT4RoIProcessor: resize {resize!r} is not one of {list(RESIZE_MODES)}")
        self.resize = resize
        self.roi_token = roi_token
        self.roi_token_id = tokenizer.convert_tokens_to_ids(roi_token)
        self.image_span = IMAGE_START_TOKEN + IMAGE_PATCH_TOKEN * self.num_image_tokens + IMAGE_END_TOKEN

    # --- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "max_length": self.max_length,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "roi_token": self.roi_token,
            "resize": self.resize,
        }

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the tokenizer and ``gpt4roi_processor.json`` (image and length settings) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        (folder / PROCESSOR_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> GPT4RoIProcessor:
        """Load what :meth:`save_pretrained` wrote; ``overrides`` (e.g. ``image_root``) win over the file."""
        settings_path = Path(folder) / PROCESSOR_FILE
        if not settings_path.is_file():
            raise FileNotFoundError(f"{settings_path} not found: not a folder written by GPT4RoIProcessor.save_pretrained")
        settings = json.loads(settings_path.read_text())
        settings.update(overrides)
        return cls(AutoTokenizer.from_pretrained(str(folder)), **settings)

    # --- pieces -----------------------------------------------------------------------------------------
    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """``(3, S, S)``, never cropped, so normalised boxes still fit (see :data:`RESIZE_MODES`)."""
        image = image.convert("RGB")
        size = self.image_size
        if self.resize == "square":
            resized = image.resize((size, size), Image.Resampling.BICUBIC)
        else:
            short = min(image.size)
            resized = image.resize((max(1, int(image.width * size / short)), max(1, int(image.height * size / short))),
                                   Image.Resampling.BICUBIC)
        array = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8)
        pixels = array.view(resized.height, resized.width, 3).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        pixels = (pixels - mean) / std
        if pixels.shape[-2:] != (size, size):
            pixels = torch.nn.functional.interpolate(pixels[None], size=(size, size), mode="bilinear",
                                                     align_corners=False)[0]
        return pixels

    def normalised_boxes(self, row: Mapping[str, Any], order: list[int], image: Image.Image) -> torch.Tensor:
        """Boxes of ``regions[order]`` as xyxy in [0, 1] of the row's original width and height."""
        width = row.get("width") or image.width
        height = row.get("height") or image.height
        regions = row.get("regions") or []
        boxes = torch.tensor([list(regions[k]["bbox"]) for k in order], dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return (boxes / scale).clamp(0.0, 1.0)

    def _tokens(self, segments: list[Segment]) -> tuple[list[int], list[int]]:
        """Token ids of ``segments``, each tokenised alone so label boundaries fall exactly between them."""
        ids: list[int] = []
        labels: list[int] = []
        for segment in segments:
            piece = self.tokenizer(segment.text, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if segment.supervised else [IGNORE_INDEX] * len(piece)
        return ids, labels

    # --- encoding, step by step -------------------------------------------------------------------------
    def encode(
        self,
        row: Mapping[str, Any],
        image: Image.Image | None = None,
        generation: bool = False,
        continuation: str | None = None,
    ) -> EncodedRow:
        """One row -> token ids, labels, pixels and boxes, truncated to ``max_length`` by whole turns.

        ``generation``: end with the assistant header instead of the last assistant answer.
        ``continuation``: (with ``generation``) append this text as the only supervised segment, for scoring.
        Truncation drops trailing exchanges (and the regions only they mention); a prompt that cannot fit,
        or a first exchange that cannot, is an error naming the row.
        """
        row_id = str(row.get("id", "<no id>"))
        turns = self._turns_to_encode(row, row_id, generation)
        head = self._system_tokens()
        per_turn = [self._tokens(turn.segments) for turn in turns]
        tail = self._tokens(self._answer_opening(turns, continuation) if generation else [])
        keep = self._turns_that_fit(row_id, turns, [len(ids) for ids, _ in per_turn],
                                    fixed=len(head[0]) + len(tail[0]), generation=generation)
        ids, labels = _joined([head, *per_turn[:keep], tail])
        order = self._region_order(row_id, turns[:keep], ids)
        image = image if image is not None else load_image(row, self.image_root)
        return EncodedRow(
            row_id=row_id,
            input_ids=ids,
            labels=labels,
            pixel_values=self.pixel_values(image),
            boxes=self.normalised_boxes(row, order, image),
            dropped_turns=len(turns) - keep,
            regions=order,
        )

    def _turns_to_encode(self, row: Mapping[str, Any], row_id: str, generation: bool) -> list[RenderedTurn]:
        """The row's rendered turns; a generation prompt leaves out a trailing answer (the reference)."""
        turns = render_turns(row, self.image_span, self.roi_token)
        if generation and turns and turns[-1].role == "gpt":
            turns = turns[:-1]
        if not turns:
            raise RowInputError(row_id, "has no conversation turns")
        return turns

    def _system_tokens(self) -> tuple[list[int], list[int]]:
        """``<s>`` (when the tokenizer has one) and the system message: the masked start of every sequence."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        ids, labels = self._tokens([Segment(SYSTEM_MESSAGE + "\n\n", False)])
        return bos + ids, [IGNORE_INDEX] * len(bos) + labels

    @staticmethod
    def _answer_opening(turns: list[RenderedTurn], continuation: str | None) -> list[Segment]:
        """The assistant header a generation prompt ends with, then ``continuation`` (supervised) when scoring.

        After an assistant turn, that turn's supervised ``"\\n###"`` has already opened the header.
        """
        opener = " " if turns[-1].role == "gpt" else f"{STOP_MARKER} "
        tail = [Segment(opener + ASSISTANT_ROLE + ": ", False)]
        if continuation is not None:
            tail.append(Segment(continuation, True))
        return tail

    def _turns_that_fit(self, row_id: str, turns: list[RenderedTurn], lengths: list[int], *, fixed: int,
                        generation: bool) -> int:
        """How many leading turns fit in ``max_length`` beside ``fixed`` tokens (system message, answer opening).

        Training keeps whole exchanges (ending on an answer) so that no label is cut mid-answer; a generation
        prompt is never shortened, since a cut question would be a different question.
        """
        budget = self.max_length - fixed
        if sum(lengths) <= budget:
            return len(turns)
        if generation:
            raise RowInputError(row_id, f"prompt needs {fixed + sum(lengths)} tokens; max_length is {self.max_length}")
        for end in range(len(turns), 0, -1):
            if turns[end - 1].role == "gpt" and sum(lengths[:end]) <= budget:
                return end
        raise RowInputError(
            row_id, f"its first exchange needs {fixed + sum(lengths[:2])} tokens; max_length is {self.max_length}"
        )

    def _region_order(self, row_id: str, kept: list[RenderedTurn], ids: list[int]) -> list[int]:
        """The regions of the kept turns in order of first mention: the k-th box goes to the k-th ``<roi>``.

        A count that differs from the ``<roi>`` tokens in ``ids`` would pair boxes with the wrong tokens.
        """
        order = [k for turn in kept for k in turn.new_regions]
        if ids.count(self.roi_token_id) != len(order):
            raise RowInputError(
                row_id,
                f"{ids.count(self.roi_token_id)} {self.roi_token} tokens for {len(order)} boxes "
                f"(does the text contain a literal {self.roi_token}?)",
            )
        return order

    def collate(self, encoded: Sequence[EncodedRow], padding_side: str = "right") -> dict[str, Any]:
        """Pad and stack; ``boxes`` stays a list (rows hold different numbers of regions, possibly none)."""
        if not encoded:
            raise ValueError("GPT4RoIProcessor.collate: no rows")
        longest = max(len(item.input_ids) for item in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
        labels = torch.full((len(encoded), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for index, item in enumerate(encoded):
            length = len(item.input_ids)
            span = slice(longest - length, longest) if padding_side == "left" else slice(0, length)
            input_ids[index, span] = torch.tensor(item.input_ids)
            labels[index, span] = torch.tensor(item.labels)
            attention_mask[index, span] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": torch.stack([item.pixel_values for item in encoded]),
            "boxes": [item.boxes for item in encoded],
        }

    def __call__(
        self,
        rows: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image | None] | None = None,
        generation: bool = False,
        continuations: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A model batch from schema rows (``images`` optionally supplies PIL images, row by row)."""
        images = list(images) if images is not None else [None] * len(rows)
        continuations = list(continuations) if continuations is not None else [None] * len(rows)
        if len(images) != len(rows) or len(continuations) != len(rows):
            raise ValueError("GPT4RoIProcessor: images/continuations must match rows one to one")
        if continuations[0] is not None:
            generation = True
        encoded = [
            self.encode(row, image, generation=generation, continuation=text)
            for row, image, text in zip(rows, images, continuations, strict=True)
        ]
        batch = self.collate(encoded, padding_side="left" if generation and continuations[0] is None else "right")
        if generation and continuations[0] is None:
            del batch["labels"]
        return batch
