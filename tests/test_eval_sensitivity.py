"""``region_sensitivity``: right region versus a distractor region of the same image, for any model.

Rows are RefCOCOg-style validation rows (one region, gold references) written to a built folder; models are
small stand-ins with known log-likelihoods, so every metric value is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_eval_runner import write_folder

from baselines.floors import TextSimilarity
from builders.boxes import box_iou
from builders.schema import validate
from evaluators.cache import AnswerCache
from evaluators.protocol import EvalModel, Request, digest
from evaluators.runner import answer_jobs, default_task_dir
from evaluators.tasks import make_task

TASK_DIR = default_task_dir()
# image -> [(source_id, x1, caption)]: image 1 has three objects (the 3rd overlaps the 1st: IoU 0.6), image 2 two
# objects with the same caption (no distractor: the gold answer is right for both), image 3 one object
OBJECTS = {"1": [("a", 0.0, "the red circle"), ("b", 100.0, "the blue small square"), ("c", 10.0, "a red ring")],
           "2": [("d", 0.0, "the green star"), ("e", 100.0, "the green star")],
           "3": [("f", 0.0, "the lonely triangle")]}


def sensitivity_rows() -> list[dict[str, Any]]:
    rows = []
    for image, objects in OBJECTS.items():
        for source_id, x, caption in objects:
            row = {"id": f"refcocog:validation:{image}{source_id}", "source": "refcocog", "variant": "umd",
                   "task": "region_caption", "split": "validation", "image": f"img/{image}.jpg", "image_id": image,
                   "width": 200, "height": 100,
                   "regions": [{"bbox": [x, 0.0, x + 50.0, 50.0], "segmentation": "", "label": "shape",
                                "source_id": source_id}],
                   "conversations": [{"from": "human", "value": "<image>\nDescribe <region1>."},
                                     {"from": "gpt", "value": caption}],
                   "choices": [], "label": -1, "references": [caption], "meta": "{}"}
            validate(row)
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sensitivity")
    write_folder(root / "refcocog", {"validation": sensitivity_rows()})
    return root


class BoxModel(EvalModel):
    """Log-likelihood ``-nats_per_token * tokens`` of the answer when the box is the item's own box, ``-wrong``
    per token otherwise; ``None`` boxes: reads no region at all (a blind model)."""

    def __init__(self, own_boxes: dict[str, list[float]] | None, right: float = 1.0, wrong: float = 3.0):
        self.own_boxes, self.right, self.wrong = own_boxes, right, wrong

    @property
    def fingerprint(self) -> str:
        return digest("BoxModel", self.own_boxes is None, self.right, self.wrong)

    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        raise AssertionError("region_sensitivity never asks for generation")

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        out = []
        for request in requests:
            assert request.row["regions"][0]["label"] == ""  # only the box differs between the two requests
            tokens = len(request.continuation.split())
            if self.own_boxes is None:
                out.append(-2.0 * tokens)
                continue
            own = self.own_boxes[request.row["id"]] == list(request.row["regions"][0]["bbox"])
            out.append(-(self.right if own else self.wrong) * tokens)
        return out


def run(task, model, tmp_path):
    answers, _ = answer_jobs(model, task.jobs(), AnswerCache(tmp_path / f"{model.fingerprint}.sqlite",
                                                             model.fingerprint), batch_size=3, progress=False)
    return task.score(answers)


def test_distractors_are_other_regions_of_the_same_image_and_chosen_deterministically(root):
    task = make_task("region_sensitivity", TASK_DIR, data_root=root)
    items = task.all_items
    # 1a and 1c may not take each other (IoU 0.6 >= 0.5): both take b; b takes a or c; image 2 shares its
    # caption, image 3 has one object
    assert box_iou([0, 0, 50, 50], [10, 0, 60, 50]) == pytest.approx(40 / 60)
    distractors = {item.row_id.rsplit(":", 1)[1]: item.distractor_id for item in items}
    assert set(distractors) == {"1a", "1b", "1c"} and distractors["1a"] == distractors["1c"] == "b"
    assert distractors["1b"] in {"a", "c"}
    assert dict(task.skipped) == {"no_distractor": 3}
    again = make_task("region_sensitivity", TASK_DIR, data_root=root)
    assert [i.distractor_id for i in again.all_items] == [i.distractor_id for i in items]
    reseeded = {seed: make_task("region_sensitivity", TASK_DIR, data_root=root,
                                overrides={"region_sensitivity": {"seed": seed}}).all_items[1].distractor_id
                for seed in range(8)}
    assert set(reseeded.values()) == {"a", "c"}  # the seed decides among the eligible regions
    for item in items:
        assert item.right.continuation == item.distractor.continuation == item.gold
        assert item.right.prompt == item.distractor.prompt
        assert item.right.row["image"] == item.distractor.row["image"]
        assert item.right.row["regions"][0]["bbox"] != item.distractor.row["regions"][0]["bbox"]
        assert item.right.row["references"] == [] and item.right.row["conversations"][1]["value"] == ""
    assert len(task.jobs()) == 6 and {job.mode for job in task.jobs()} == {"loglikelihood"}


def test_a_region_reading_model_wins_and_a_blind_one_ties(root, tmp_path):
    task = make_task("region_sensitivity", TASK_DIR, data_root=root)
    own = {row["id"]: row["regions"][0]["bbox"] for row in sensitivity_rows()}
    reader = run(task, BoxModel(own), tmp_path)
    assert reader.metrics == {"gap": pytest.approx(2000.0), "right_wins": 100.0}  # 2 nats/token, x1000
    assert reader.per_item["gap"] == pytest.approx([2000.0] * 3)
    blind = run(task, BoxModel(None), tmp_path)
    assert blind.metrics == {"gap": 0.0, "right_wins": 50.0}
    assert blind.intervals(200, 0) == {"gap": [0.0, 0.0], "right_wins": [50.0, 50.0]}
    contrary = run(task, BoxModel(own, right=2.0, wrong=1.5), tmp_path)
    assert contrary.metrics == {"gap": pytest.approx(-500.0), "right_wins": 0.0}
    record = contrary.records[0]
    assert record["loglikelihood_right"] == pytest.approx(-2.0 * len(record["gold"].split()))
    # the text-only floor scores the same text twice: a tie on every item
    assert run(task, TextSimilarity(), tmp_path).metrics == {"gap": 0.0, "right_wins": 50.0}


def test_limit_and_bad_configs(root):
    assert len(make_task("region_sensitivity", TASK_DIR, data_root=root, limit=2).jobs()) == 4
    with pytest.raises(ValueError, match="mode must be 'loglikelihood'"):
        make_task("region_sensitivity", TASK_DIR, data_root=root,
                  overrides={"region_sensitivity": {"mode": "generate"}})
    lonely = root.parent / "lonely"
    write_folder(lonely / "refcocog", {"validation": [r for r in sensitivity_rows() if r["image_id"] == "3"]})
    with pytest.raises(ValueError, match=r"no item with another region of its image \(skipped: \{'no_distractor': 1\}"):
        _ = make_task("region_sensitivity", TASK_DIR, data_root=lonely).all_items
