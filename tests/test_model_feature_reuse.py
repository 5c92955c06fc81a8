"""Feature reuse: one picture, one region pass and one prompt pass per question, whatever the number of options;
the scores equal those of running every request through the whole model."""

from __future__ import annotations

import pytest
import torch
from test_model_gpt4roi import scene, tiny_cfg

from gpt4roi.modeling import build_model, generate_for_rows, loglikelihood
from gpt4roi.modeling.inference import prompt_groups
from gpt4roi.modeling.modeling_gpt4roi import unique_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_model(tiny_cfg())
    return model.eval(), processor


def vcr_row(row_id: str, prompt: str, boxes: list[list[float]]) -> dict:
    return {"id": row_id, "width": 160, "height": 120,
            "regions": [{"bbox": b, "segmentation": "", "label": "", "source_id": ""} for b in boxes],
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": ""}]}


BOXES = [[10, 10, 70, 70], [90, 40, 150, 110]]
QA = vcr_row("q:1", "<image>\n<region1>, <region2>: why is region1 next to region2?", BOXES)
QAR = vcr_row("q:1r", "<image>\n<region1>, <region2>: it is red. Why is that right?", BOXES)
OTHER = vcr_row("q:2", "<image>\n<region1>: what is it?", BOXES[1:])
OPTIONS = ["it is red", "because it is blue", "a circle", "the square is larger than it"]


def requests():
    """A VCR question (4 answers, then 4 rationales, one picture) and one question about another picture."""
    rows = [QA] * 4 + [QAR] * 4 + [OTHER] * 2
    images = [scene("red")] * 8 + [scene("green")] * 2
    return rows, OPTIONS + OPTIONS + OPTIONS[:2], images


class Counter:
    """Counts the pictures through the vision tower and the boxes through the region module."""

    def __init__(self, model):
        self.pictures = self.boxes = self.llm_tokens = 0
        self.handles = [
            model.vision_tower.register_forward_pre_hook(self.tower),
            model.region_module.register_forward_pre_hook(self.region),
            model.language_model.register_forward_pre_hook(self.llm, with_kwargs=True),
        ]

    def tower(self, module, args):
        self.pictures += args[0].shape[0]

    def region(self, module, args):
        self.boxes += sum(len(b) for b in args[1])

    def llm(self, module, args, kwargs):
        tokens = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
        self.llm_tokens += tokens.shape[0] * tokens.shape[1]

    def close(self):
        for handle in self.handles:
            handle.remove()


def test_reuse_gives_the_scores_of_the_whole_model_per_request(tiny):
    model, processor = tiny
    rows, texts, images = requests()
    model.share_visual_features = False
    counted = Counter(model)
    plain = loglikelihood(model, processor, rows, texts, images=images, batch_size=10, reuse=False)
    model.share_visual_features = True
    alone = (counted.pictures, counted.boxes, counted.llm_tokens)
    counted.close()
    counted = Counter(model)
    reused = loglikelihood(model, processor, rows, texts, images=images, batch_size=10)
    counted.close()
    assert reused == pytest.approx(plain, abs=2e-4)
    assert len(set(round(s, 3) for s in plain[:4])) == 4  # the options really differ
    # 10 requests, 2 pictures: one tower pass and one region pass per picture and box, one prompt pass per prompt.
    assert alone[:2] == (10, 18)
    assert (counted.pictures, counted.boxes) == (2, 3)
    assert counted.llm_tokens < alone[2] / 2


def test_requests_in_one_batch_share_the_picture_without_the_prompt_cache(tiny):
    model, processor = tiny
    rows, texts, images = requests()
    counted = Counter(model)
    loglikelihood(model, processor, rows, texts, images=images, batch_size=10, reuse=False)
    counted.close()
    assert (counted.pictures, counted.boxes) == (2, 3)


def test_prompt_groups_need_the_same_tokens_picture_and_boxes(tiny):
    _, processor = tiny
    moved = vcr_row("q:1m", QA["conversations"][0]["value"], [[10, 10, 70, 71], BOXES[1]])
    rows = [QA, QA, QAR, moved, QA]
    images = [scene("red"), scene("red"), scene("red"), scene("red"), scene("green")]
    encoded = [processor.encode(row, image, generation=True, continuation="a")
               for row, image in zip(rows, images, strict=True)]
    assert prompt_groups(encoded) == [[0, 1], [2], [3], [4]]


def test_unique_rows_keeps_first_appearance_order():
    batch = torch.tensor([[2.0, 0.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    unique, index = unique_rows(batch)
    assert unique.tolist() == [[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]]
    assert index.tolist() == [0, 1, 0, 1, 2]


def test_several_prompts_about_one_picture_run_the_tower_once(tiny):
    model, processor = tiny
    rows = [QA, QAR, OTHER]
    images = [scene("red")] * 3
    counted = Counter(model)
    alone = generate_for_rows(model, processor, rows, max_new_tokens=3, images=images, batch_size=3)
    shared = (counted.pictures, counted.boxes)
    model.share_visual_features = False
    try:
        assert generate_for_rows(model, processor, rows, max_new_tokens=3, images=images, batch_size=3) == alone
    finally:
        model.share_visual_features = True
        counted.close()
    # Shared: one picture, the two distinct boxes; then each sample on its own: three pictures, five boxes.
    assert shared == (1, 2)
    assert (counted.pictures, counted.boxes) == (4, 7)
