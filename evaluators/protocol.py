"""The model protocol (docs/design.md#model-protocol): what a task asks of a model, and what it must answer.

A task turns each evaluation row into one or more :class:`Request` objects. A model answers a batch of them
with :meth:`EvalModel.generate` (free text) or :meth:`EvalModel.loglikelihood` (the log-probability of
``continuation`` after ``prompt``). Tasks never know which model they talk to, and the runner only reaches a
model through Hydra's ``_target_``, so GPT4RoI, the image-level baselines and the text-only floors are
interchangeable.

The row inside a request is the schema row with its answers masked (see :func:`request_row`): a model gets
the image, the regions and the question, never the gold label, references or assistant turns. The row's
``image`` is a path relative to its source's raw root (or embedded bytes in a published corpus); a model that
reads pixels takes the folder(s) from its own config (e.g. ``image_root: ${data_root}/raw``), which Hydra
passes to its constructor — the protocol itself carries no paths.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.placeholders import IMAGE_TOKEN

#: Box conventions a model may declare: scale (``normalized`` floats in [0, 1], ``per_mille`` integers in
#: [0, 1000], ``pixels`` of the original image) and order (``xyxy`` corners, ``xywh`` corner and size).
COORDINATE_CONVENTIONS = tuple(f"{scale}_{order}" for scale in ("normalized", "per_mille", "pixels")
                               for order in ("xyxy", "xywh"))
#: How a model family opens the first human turn in its own training data: ``plain`` is the schema's
#: ``<image>\n``; ``gpt4roi`` is GPT4RoI's stage-2 and VCR wording (``datasets/vcr.py``; GLaMM's ``infer.py``
#: uses the same), ``osprey`` Osprey's (``osprey/eval/lvis_paco_eval.py``).
PROMPT_FORMATS = {
    "plain": f"{IMAGE_TOKEN}\n",
    "gpt4roi": f"The {IMAGE_TOKEN} provides an overview of the picture.\n",
    "osprey": f"{IMAGE_TOKEN}\nThis provides an overview of the picture.\n",
}


def with_prompt_format(row: Mapping[str, Any], prompt_format: str) -> dict[str, Any]:
    """A copy of a request row whose first human turn opens the way ``prompt_format`` says, instead of ``<image>\n``.

    Request prompts always start with ``<image>`` (:func:`request_row`); a model asked in another family's
    format answers worse, so each model applies its own.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt_format {prompt_format!r}; one of {sorted(PROMPT_FORMATS)}")
    turns = [dict(turn) for turn in row["conversations"]]
    plain = PROMPT_FORMATS["plain"]
    first = turns[0]["value"]
    if not first.startswith(plain):
        raise ValueError(f"row {row.get('id')!r}: first human turn does not start with {plain!r}")
    turns[0]["value"] = PROMPT_FORMATS[prompt_format] + first[len(plain):]
    return {**row, "conversations": turns}


@dataclass(frozen=True)
class Request:
    """One question to a model.

    ``prompt`` is the rendered human turn (``<image>`` first, regions as ``<regionK>`` referring to
    ``row["regions"][K-1]``); ``continuation`` is the text whose log-probability ``loglikelihood`` returns
    (empty for generation). ``choices`` repeats the row's options so that text-only models need not parse the
    prompt; ``choice_labels`` are what an answer says to pick each choice (``(A)``.. for VCR; the choice text
    itself when empty); ``fields`` holds the parts the prompt was rendered from (question, category name, ...).
    """

    key: str
    row: Mapping[str, Any]
    prompt: str
    continuation: str = ""
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.row.get("task", ""))

    def answer_for(self, index: int) -> str:
        """The answer that picks choice ``index``."""
        return self.choice_labels[index] if self.choice_labels else self.choices[index]


class EvalModel(ABC):
    """A model behind the protocol. Subclasses are instantiated from ``conf/eval/model/*.yaml``.

    ``fingerprint`` must change whenever the answers could change (weights, rendering, prompt template),
    because the runner's cache trusts it: two models with one fingerprint share cached answers.
    """

    #: Short name used for ``results/<name>/``; set from the config's ``name``.
    name: str = "model"
    #: How the model writes a box in its answers (one of :data:`COORDINATE_CONVENTIONS`), declared in its
    #: config; grounding tasks read answers in it and never guess it. ``None``: the model does not ground.
    coordinates: str | None = None

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A stable digest of everything that determines this model's answers."""

    @abstractmethod
    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        """One answer per request (``max_new_tokens``, ``temperature``, ``stop`` in ``gen_kwargs``)."""

    @abstractmethod
    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        """Sum of log-probabilities of each request's ``continuation`` given its ``prompt``."""


def digest(*parts: Any) -> str:
    """A short, stable hex digest of JSON-serialisable parts (sorted keys), for fingerprints."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_digest(paths: list[Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (1 MiB chunks), for fingerprints of files on disk.

    A model's weights and a dataset's shards are fingerprinted by content, so that a retrained model or a
    rebuilt dataset never reuses cached answers of the old one.
    """
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
    return sha.hexdigest()[:16]


def request_row(row: Mapping[str, Any], prompt: str, *, regions: Sequence[Mapping[str, Any]] | None = None,
                hide_region_labels: bool = False) -> dict[str, Any]:
    """The row a model sees: the image and the regions of ``row``, the request as its only exchange.

    Answers are masked: ``label`` is -1, ``references`` and ``meta`` are emptied and the assistant turn is
    blank. ``regions`` replaces the row's regions (a task asking about one region of many passes only that
    one); ``hide_region_labels`` blanks their category names when the category is the answer.
    """
    kept = [dict(region) for region in (row["regions"] if regions is None else regions)]
    if hide_region_labels:
        for region in kept:
            region["label"] = ""
    if not prompt.startswith(IMAGE_TOKEN):
        raise ValueError(f"row {row.get('id')!r}: a request prompt must start with {IMAGE_TOKEN}, got {prompt[:40]!r}")
    masked = dict(row)
    masked.update(regions=kept, conversations=[{"from": "human", "value": prompt}, {"from": "gpt", "value": ""}],
                  label=-1, references=[], meta="{}")
    return masked
