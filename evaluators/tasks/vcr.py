"""VCR multiple choice: Q->A (``vcr_qa``), QA->R (``vcr_qar``) and their combination Q->AR.

Rows are the VCR builder's ``vcr_qa`` / ``vcr_qar`` rows, whose first human turn is GPT4RoI's prompt
(docs/protocols.md#vcr-multiple-choice): an instruction line, the question block, and one ``(A),<text>``
line per option. The task reads the question (and, for QA->R, the right answer) back from that turn and
renders the prompt of its own config, so the protocol is named in ``conf/eval/task/*.yaml``; with the
default config the rendered prompt is the stored one, byte for byte (tested).

Two modes:

* ``generate``: the model answers freely, the first letter parsed from the answer is its choice
  (:func:`evaluators.metrics.choice.parse_letter`); an unparsable answer is wrong and counted;
* ``loglikelihood``: four requests per item, the continuation being each option's text; the choice is the
  highest log-probability divided by the option's length in characters (model-independent length
  normalisation, as lm-evaluation-harness's ``acc_norm``).

Q->AR (``kind: vcr_q_ar``) runs the two part tasks and counts an item right only when both of its answers
are, matching the parts by the question's ``annot_id``. Its requests are the parts' requests under the parts'
cache scopes, so running ``vcr_qa``, ``vcr_qar`` and Q->AR together asks the model each question once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from builders.placeholders import IMAGE_TOKEN
from builders.readers import vcr_text

from ..metrics.choice import correct, letter, letter_distribution, parse_letter
from ..protocol import Request, digest, request_row
from .base import Job, JobKey, Task, TaskResult

_QAR_QUESTION = re.compile(
    "^" + re.escape(vcr_text.QAR_QUESTION).replace(re.escape("{question}"), "(?P<question>.*)")
    .replace(re.escape("{answer}"), "(?P<answer>.*)") + "$", re.DOTALL)


@dataclass(frozen=True)
class VcrItem:
    row_id: str
    annot_id: str
    label: int
    requests: tuple[Request, ...]


def question_fields(row: Mapping[str, Any]) -> dict[str, str]:
    """``question`` (and ``answer`` for QA->R) read back from the row's multiple-choice prompt.

    Raises ``ValueError`` naming the row when the turn is not instruction / question / options.
    """
    lines = row["conversations"][0]["value"].split("\n")
    options = vcr_text.options_block(row["choices"]).split("\n")
    if len(lines) < 3 + len(options) or lines[0] != IMAGE_TOKEN or lines[-len(options):] != options:
        raise ValueError(f"row {row['id']!r}: first human turn is not '<image>', instruction, question, "
                         f"{len(options)} option lines")
    block = "\n".join(lines[2:-len(options)])
    if row["task"] != "vcr_qar":
        return {"question": block}
    match = _QAR_QUESTION.match(block)
    if not match:
        raise ValueError(f"row {row['id']!r}: QA->R question block does not read {vcr_text.QAR_QUESTION!r}")
    return {"question": match["question"], "answer": match["answer"]}


class VcrTask(Task):
    """``vcr_qa`` or ``vcr_qar`` (the rows' task, set by the config's ``dataset.filter.task``)."""

    kind = "vcr"
    metric_impl = ("accuracy of the first parsed letter (unparsable = wrong) | loglikelihood: argmax of "
                   "log-prob / len(option)")

    @cached_property
    def all_items(self) -> list[VcrItem]:
        items = []
        for row in self.rows:
            if len(row["choices"]) != 4 or not 0 <= row["label"] < 4:
                self.skipped["not_four_choices"] += 1
                continue
            fields = question_fields(row)
            annot_id = str(json.loads(row["meta"] or "{}").get("annot_id", row["id"]))
            items.append(VcrItem(row["id"], annot_id, int(row["label"]), self._requests(row, fields)))
        return items

    def _requests(self, row: Mapping[str, Any], fields: dict[str, str]) -> tuple[Request, ...]:
        choices = tuple(row["choices"])
        labels = tuple(vcr_text.letter(k) for k in range(len(choices)))
        regions = vcr_text.region_list(len(row["regions"]))
        if self.mode == "generate":
            text = self.cfg["prompt"].format(regions=regions, options=vcr_text.options_block(choices), **fields)
            prompt = f"{IMAGE_TOKEN}\n{text}"
            return (Request(row["id"], request_row(row, prompt), prompt, choices=choices, choice_labels=labels,
                            fields=fields),)
        text = self.cfg["loglikelihood_prompt"].format(regions=regions, **fields)
        prompt = f"{IMAGE_TOKEN}\n{text}"
        masked = request_row(row, prompt)
        return tuple(Request(f"{row['id']}#option{k}", masked, prompt, continuation=choice, choices=choices,
                             choice_labels=labels, fields=fields) for k, choice in enumerate(choices))

    def jobs(self) -> list[Job]:
        return [self.job(request) for item in self.limited(self.all_items) for request in item.requests]

    def predict(self, item: VcrItem, answers: Mapping[JobKey, Any]) -> tuple[int | None, Any]:
        """The chosen index (``None`` if unparsable) and the raw answer(s) behind it."""
        raw = [answers[self.job(request).key] for request in item.requests]
        if self.mode == "generate":
            return parse_letter(raw[0], 4), raw[0]
        normalised = [float(ll) / max(len(r.continuation), 1) for ll, r in zip(raw, item.requests, strict=True)]
        return max(range(len(normalised)), key=normalised.__getitem__), normalised

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items = self.limited(self.all_items)
        predicted, raws = zip(*(self.predict(item, answers) for item in items), strict=True) if items else ((), ())
        return choice_result(items, list(predicted), list(raws))

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.mode == "loglikelihood":
            described["prompt"] = self.cfg["loglikelihood_prompt"]
        return described


def choice_result(items: list[VcrItem], predicted: list[int | None], raws: list[Any],
                  is_correct: list[float] | None = None) -> TaskResult:
    """Accuracy, per-row records and the letter distribution of a multiple-choice task."""
    gold = [item.label for item in items]
    hits = correct(predicted, gold) if is_correct is None else is_correct
    records = [{"id": item.row_id, "annot_id": item.annot_id, "image_id": item.requests[0].row["image_id"],
                "answer": raw, "predicted": letter(p),
                "gold": letter(item.label), "correct": bool(hit)}
               for item, p, raw, hit in zip(items, predicted, raws, hits, strict=True)]
    return TaskResult(metrics={"accuracy": 100.0 * sum(hits) / max(len(hits), 1)},
                      per_item={"accuracy": [100.0 * h for h in hits]}, item_ids=[item.row_id for item in items],
                      records=records, extra={"letters": letter_distribution(predicted, gold)})


class VcrQARTask(Task):
    """Q->AR: both the answer and the rationale right, matched by ``annot_id`` (config ``parts``)."""

    kind = "vcr_q_ar"
    metric_impl = "accuracy: Q->A and QA->R both right (matched by annot_id)"

    def __init__(self, name: str, cfg: Mapping[str, Any], data_root: Any = None, limit: int | None = None,
                 part_factory: Callable[[str], Task] | None = None):
        super().__init__(name, cfg, data_root, limit)
        if part_factory is None:
            raise ValueError(f"task {name}: Q->AR needs its part tasks (qa, qar) from the task loader")
        self.qa = part_factory(self.cfg["parts"]["qa"])
        self.qar = part_factory(self.cfg["parts"]["qar"])
        if not (isinstance(self.qa, VcrTask) and isinstance(self.qar, VcrTask)) or self.qa.mode != self.qar.mode:
            raise ValueError(f"task {name}: parts must be VCR tasks of one mode")
        self.mode = self.qa.mode

    @cached_property
    def pairs(self) -> list[tuple[VcrItem, VcrItem]]:
        by_annot = {item.annot_id: item for item in self.qar.all_items}
        pairs = [(qa, by_annot[qa.annot_id]) for qa in self.qa.all_items if qa.annot_id in by_annot]
        self.skipped["unmatched_qa"] = len(self.qa.all_items) - len(pairs)
        self.skipped["unmatched_qar"] = len(self.qar.all_items) - len(pairs)
        return self.limited(pairs)

    @cached_property
    def fingerprint(self) -> str:
        return digest(self.kind, self.qa.fingerprint, self.qar.fingerprint)

    def jobs(self) -> list[Job]:
        return [part.job(request) for pair in self.pairs for part, item in zip((self.qa, self.qar), pair, strict=True)
                for request in item.requests]

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        qa_items = [qa for qa, _ in self.pairs]
        both, raws = [], []
        for qa_item, qar_item in self.pairs:
            qa_pred, qa_raw = self.qa.predict(qa_item, answers)
            qar_pred, qar_raw = self.qar.predict(qar_item, answers)
            both.append(float(qa_pred == qa_item.label and qar_pred == qar_item.label))
            raws.append({"qa": qa_raw, "qar": qar_raw, "qar_predicted": letter(qar_pred)})
        predicted = [self.qa.predict(item, answers)[0] for item in qa_items]
        result = choice_result(qa_items, predicted, raws, is_correct=both)
        result.extra["unmatched"] = {k: v for k, v in self.skipped.items() if k.startswith("unmatched")}
        return result

    def describe(self) -> dict[str, Any]:
        qa, qar = self.qa.describe(), self.qar.describe()
        return {**qa, "task": self.name, "kind": self.kind, "description": self.cfg.get("description", ""),
                "prompt": f"Q->A: {qa['prompt']}\nQA->R: {qar['prompt']}", "metric": self.metric_impl,
                "dataset": f"{qa['dataset']} ({qa['filter']}) + {qar['dataset']} ({qar['filter']})"}
