"""Region sensitivity: does the model read the region it is asked about?

For each held-out item (a row with one region and its gold ``references``) whose image has another region,
the task asks the model for two log-likelihoods of the same gold answer (the first reference) after the same
prompt: once with the right region, once with a **distractor**, another region of the same image. A model
that reads the region gives the gold answer more probability with the right region; a model that ignores the
region (``blind``, a renderer that says "the object") gives both the same.

The distractor is taken from the other rows of the same split that show the same image: a region with
another ``source_id``, IoU below ``max_iou`` with the right box, and no reference in common with the item
(otherwise the gold answer would also be right for it). Among those, one is drawn with
``row_rng(seed, item id)`` — deterministic, independent of the model and of the other items. Items without
such a region are skipped and counted (``no_distractor``). Region labels are hidden from the model in both
requests: only the box differs.

Per item, ``gap`` is ``(log p(gold | right) - log p(gold | distractor)) / T`` with ``T`` the number of
whitespace tokens of the gold answer — the same count for every model, whatever its tokenizer — reported
×1000 (millinats per token: the leaderboard's one decimal then resolves 1e-4 nats), and ``right_wins`` is 100 when the right region gives the higher likelihood, 0
when the distractor does and 50 for a tie (``|difference| <= tie_tolerance`` nats). Both are means over items;
their 95% intervals resample items, i.e. they are paired bootstrap intervals of the right-minus-distractor
difference (resampling images where the suite's bootstrap does). A model that ignores the region scores 0 and
50. Any model that implements ``loglikelihood``
can be scored, image-level models through their own renderer (the request row carries the box).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from builders.boxes import box_iou
from builders.placeholders import IMAGE_TOKEN, region_token
from builders.seeding import row_rng

from ..protocol import Request, request_row
from .base import Job, JobKey, Task, TaskResult


@dataclass(frozen=True)
class SensitivityItem:
    row_id: str
    image_id: str
    gold: str
    right: Request
    distractor: Request
    distractor_id: str


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


class RegionSensitivityTask(Task):
    kind = "region_sensitivity"
    metric_impl = ("gap: mean of (log p(gold | right region) - log p(gold | distractor region of the same image)) "
                   "/ whitespace tokens of the gold answer, x1000 (millinats/token); right_wins: % of items where "
                   "the right region wins (tie 50); intervals: paired bootstrap over items")

    def __init__(self, name: str, cfg: Mapping[str, Any], data_root: Any = None, limit: int | None = None):
        super().__init__(name, {"mode": "loglikelihood", **dict(cfg)}, data_root, limit)
        if self.mode != "loglikelihood":
            raise ValueError(f"task {name}: region_sensitivity compares log-likelihoods; mode must be "
                             f"'loglikelihood', got {self.mode!r}")
        self.seed = int(self.cfg.get("seed", 0))
        self.max_iou = float(self.cfg.get("max_iou", 0.5))
        self.tie_tolerance = float(self.cfg.get("tie_tolerance", 1e-4))

    @cached_property
    def all_items(self) -> list[SensitivityItem]:
        prompt = f"{IMAGE_TOKEN}\n{self.cfg['prompt'].format(region=region_token(1))}"
        by_image: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in self.rows:
            by_image.setdefault((str(row["image_id"]), str(row["image"])), []).append(row)
        items = []
        for row in self.rows:
            if not row["references"] or len(row["regions"]) != 1:
                self.skipped["not_single_region_with_references"] += 1
                continue
            region = row["regions"][0]
            gold = {_norm(text) for text in row["references"]}
            candidates = {}
            for other in by_image[(str(row["image_id"]), str(row["image"]))]:
                if gold & {_norm(text) for text in other["references"]}:
                    continue
                for candidate in other["regions"]:
                    if (candidate["source_id"] != region["source_id"]
                            and box_iou(candidate["bbox"], region["bbox"]) < self.max_iou):
                        candidates.setdefault(candidate["source_id"], candidate)
            if not candidates:
                self.skipped["no_distractor"] += 1
                continue
            chosen = row_rng(self.seed, row["id"]).choice(sorted(candidates))
            answer = row["references"][0]

            def request(which: str, kept: Mapping[str, Any], row=row, answer=answer) -> Request:
                masked = request_row(row, prompt, regions=[kept], hide_region_labels=True)
                return Request(f"{row['id']}#{which}", masked, prompt, continuation=answer)

            items.append(SensitivityItem(row["id"], str(row["image_id"]), answer, request("right", region),
                                         request("distractor", candidates[chosen]), chosen))
        if not items:
            raise ValueError(f"task {self.name}: no item with another region of its image "
                             f"(skipped: {dict(self.skipped)})")
        return items

    def jobs(self) -> list[Job]:
        return [self.job(request) for item in self.limited(self.all_items)
                for request in (item.right, item.distractor)]

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items = self.limited(self.all_items)
        gaps, wins, records = [], [], []
        for item in items:
            right = float(answers[self.job(item.right).key])
            distractor = float(answers[self.job(item.distractor).key])
            difference = right - distractor
            gaps.append(1000.0 * difference / max(len(item.gold.split()), 1))
            wins.append(50.0 if abs(difference) <= self.tie_tolerance else 100.0 * (difference > 0))
            records.append({"id": item.row_id, "image_id": item.image_id, "gold": item.gold,
                            "distractor_region": item.distractor_id,
                            "loglikelihood_right": right, "loglikelihood_distractor": distractor})
        metrics = {"gap": sum(gaps) / len(gaps), "right_wins": sum(wins) / len(wins)}
        return TaskResult(metrics=metrics, per_item={"gap": gaps, "right_wins": wins},
                          item_ids=[item.row_id for item in items], records=records)
