"""Grounding tasks (referring expression comprehension, Flickr30K phrase grounding) and their box floors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_runner import _row, refcocog_rows, write_folder

from baselines.box_floors import CenterBox, RandomBox, WholeImage
from evaluators.protocol import COORDINATE_CONVENTIONS, EvalModel
from evaluators.runner import default_task_dir, main
from evaluators.tasks import load_task_config, make_task
from evaluators.tasks.grounding import FORMAT_SENTENCES, parse_box

TASK_DIR = default_task_dir()
W, H = 640.0, 480.0  # the size of test_eval_runner's rows; refcocog_rows' object is [20, 30, 140, 200]


class Declared(EvalModel):
    """A model declaring a convention and answering from a function of the request."""

    def __init__(self, coordinates, answer):
        self.coordinates, self.answer, self.name = coordinates, answer, "declared"

    @property
    def fingerprint(self):
        return f"declared-{self.coordinates}"

    def generate(self, requests, **gen_kwargs):
        return [self.answer(r) for r in requests]

    def loglikelihood(self, requests):
        raise NotImplementedError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grounding")
    write_folder(root / "refcocog", {"validation": refcocog_rows("validation", 3)})
    return root


@pytest.mark.parametrize(("answer", "convention", "expected"), [
    ("[0.25, 0.5, 0.75, 1.0]", "normalized_xyxy", ((160.0, 240.0, 480.0, 480.0), "ok")),
    ("The box is (250, 500, 750, 1000).", "per_mille_xyxy", ((160.0, 240.0, 480.0, 480.0), "ok")),
    ("160 240 320 240", "pixels_xywh", ((160.0, 240.0, 480.0, 480.0), "ok")),
    ("[0.25, 0.5, 0.5, 0.5]", "normalized_xywh", ((160.0, 240.0, 480.0, 480.0), "ok")),
    # the convention is declared, never guessed: pixel-looking numbers are out of a normalised range ...
    ("[160, 240, 480, 480]", "normalized_xyxy", (None, "out_of_range")),
    # ... and normalised-looking numbers are a tiny per-mille box
    ("[0.2, 0.3, 0.5, 0.6]", "per_mille_xyxy", ((0.128, 0.144, 0.32, 0.288), "ok")),
    ("[0.5, 0.5, 0.4, 0.9]", "normalized_xyxy", (None, "out_of_range")),  # x2 < x1
    ("a dog on the left", "normalized_xyxy", (None, "unparsable")),
    ("[0.1, 0.2, 0.3]", "normalized_xyxy", (None, "unparsable")),
])
def test_parse_box_reads_the_declared_convention(answer, convention, expected):
    parsed = parse_box(answer, convention, W, H)
    box, status = expected
    assert parsed.status == status
    assert parsed.box == (pytest.approx(box) if box else None)


def test_every_convention_has_a_prompt_sentence_and_lmms_evals_is_verbatim():
    assert set(FORMAT_SENTENCES) == set(COORDINATE_CONVENTIONS)
    assert FORMAT_SENTENCES["normalized_xyxy"] == (
        "Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, bottom-right "
        "y). All values are floating point numbers bounded between 0 and 1.")
    with pytest.raises(ValueError, match="unknown coordinate convention"):
        parse_box("[1, 2, 3, 4]", "xyxy", W, H)


def test_rec_items_per_sentence_hide_the_box_and_score_acc_and_miou(root):
    task = make_task("refcocog_rec", TASK_DIR, data_root=root)
    with pytest.raises(ValueError, match="declares no coordinate convention"):
        task.bind_model(Declared(None, str))
    task.bind_model(Declared("pixels_xyxy", str))
    jobs = task.jobs()
    assert len(jobs) == 6  # 3 objects x 2 sentences
    request = jobs[0].request
    assert request.row["regions"] == [] and request.fields["answer"] == "box"
    assert request.prompt == ("<image>\n" + FORMAT_SENTENCES["pixels_xyxy"] + " Please provide the bounding box "
                              f"coordinate of the region this sentence describes: {request.fields['expression']}")
    answers = {jobs[0].key: "[20, 30, 140, 200]",      # exact: IoU 1
               jobs[1].key: "[20, 30, 140, 115]",      # half the height: IoU 0.5, counts (>=)
               jobs[2].key: "[20, 30, 140, 114]",      # just under 0.5
               jobs[3].key: "I cannot tell",           # unparsable: IoU 0
               jobs[4].key: "[0.1, 0.1, 0.2, 0.2]",    # in range for pixels: a tiny box far away
               jobs[5].key: "[20, 30, 999, 200]"}      # x2 beyond the 640-pixel width: out of range
    result = task.score(answers)
    ious = [r["iou"] for r in result.records]
    assert ious[:3] == [1.0, 0.5, pytest.approx(84 / 170)] and ious[3:] == [0.0, 0.0, 0.0]
    assert result.metrics["Acc@0.5"] == pytest.approx(200 / 6)
    assert result.metrics["mIoU"] == pytest.approx(100 * (1.5 + 84 / 170) / 6)
    assert result.extra["answers"] == {"ok": 4, "unparsable": 1, "out_of_range": 1}
    # the convention is in the cache scope, not the task fingerprint: models pair on the leaderboard
    other = make_task("refcocog_rec", TASK_DIR, data_root=root)
    other.bind_model(Declared("normalized_xyxy", str))
    assert other.fingerprint == task.fingerprint and other.jobs()[0].scope != jobs[0].scope


def flickr_rows() -> list[dict]:
    """Two captions of one image; the chain "two dogs" has two boxes (separate build) far apart."""
    dogs = [{"bbox": [0.0, 0.0, 100.0, 100.0], "segmentation": "", "label": "two dogs", "source_id": "7"},
            {"bbox": [300.0, 0.0, 400.0, 100.0], "segmentation": "", "label": "two dogs", "source_id": "7"}]
    ball = {"bbox": [200.0, 300.0, 260.0, 360.0], "segmentation": "", "label": "a ball", "source_id": "8"}
    return [_row("flickr30k", "test", "55:0", task="multi_region_caption", variant="separate",
                 regions=[*dogs, ball], human="Describe <region1>, <region2> and <region3> in one sentence.",
                 gpt="Two dogs chase a ball.")]


def test_flickr_any_box_and_merged_box_protocols(tmp_path):
    write_folder(tmp_path / "flickr30k_separate", {"test": flickr_rows()})
    write_folder(tmp_path / "flickr30k", {"test": [{**r, "variant": "merged"} for r in flickr_rows()]})
    results = {}
    for name in ("flickr30k_grounding", "flickr30k_grounding_merged"):
        task = make_task(name, TASK_DIR, data_root=tmp_path)
        task.bind_model(Declared("pixels_xyxy", str))
        jobs = task.jobs()
        assert [j.request.fields["expression"] for j in jobs] == ["two dogs", "a ball"]
        assert 'In the sentence "Two dogs chase a ball."' in jobs[0].request.prompt
        # the prediction covers the first dog only
        results[name] = task.score({jobs[0].key: "[0, 0, 100, 100]", jobs[1].key: "[200, 300, 260, 360]"})
    assert results["flickr30k_grounding"].per_item["R@1"] == [100.0, 100.0]        # any box: the first dog
    assert results["flickr30k_grounding_merged"].per_item["R@1"] == [0.0, 100.0]   # union 400 wide: IoU 0.25
    assert results["flickr30k_grounding_merged"].records[0]["iou"] == pytest.approx(0.25)


def test_box_floors_answer_in_their_declared_convention(root):
    task = make_task("refcocog_rec", TASK_DIR, data_root=root)
    task.bind_model(CenterBox())
    requests = [job.request for job in task.jobs()]
    assert CenterBox().generate(requests[:1]) == ["[0.250, 0.250, 0.750, 0.750]"]
    assert WholeImage().generate(requests[:1]) == ["[0.000, 0.000, 1.000, 1.000]"]
    random_boxes = RandomBox(seed=3).generate(requests)
    assert random_boxes == RandomBox(seed=3).generate(requests) != RandomBox(seed=4).generate(requests)
    assert all(parse_box(b, "normalized_xyxy", W, H).status == "ok" for b in random_boxes)
    with pytest.raises(ValueError, match="grounding requests only"):
        CenterBox().generate([make_task("refcocog_reg", TASK_DIR, data_root=root).jobs()[0].request])


def test_runner_scores_grounding_floors_end_to_end(root, tmp_path):
    from omegaconf import OmegaConf

    for floor in ("center_box", "whole_image", "random_box"):
        model = OmegaConf.load(Path(TASK_DIR).parent / "model" / f"{floor}.yaml")
        cfg = OmegaConf.create({"model": model, "tasks": ["refcocog_rec"], "data_root": str(root),
                                "output_dir": str(tmp_path), "cache": None, "limit": None, "batch_size": 4,
                                "generation": {}, "task_overrides": {}, "task_dir": str(TASK_DIR),
                                "bootstrap": {"resamples": 50, "seed": 0}, "progress": False})
        assert main(cfg) == 0
    scores = {floor: json.loads((tmp_path / floor / "refcocog_rec.json").read_text()) for floor in
              ("center_box", "whole_image", "random_box")}
    # the object [20, 30, 140, 200] of a 640x480 image: the whole image and the centre box both miss it
    whole = 120 * 170 / (640 * 480)
    assert scores["whole_image"]["metrics"]["mIoU"] == pytest.approx(100 * whole)
    assert scores["whole_image"]["metrics"]["Acc@0.5"] == 0.0
    assert scores["center_box"]["task_info"]["protocol"] == "lmms_eval"
    assert scores["center_box"]["extra"]["coordinates"] == "normalized_xyxy"
    # the leaderboard shows how every box answer was read (a floor's are all in range)
    from evaluators.board import answer_rows, build_board

    board = build_board(tmp_path, reference=False, reported_file=Path("unused"), hide_metrics=[], resamples=20, seed=0)
    assert answer_rows(board)[1] == [[floor, "refcocog_rec", "normalized_xyxy", "6", "6", "0", "0"]
                                     for floor in ("center_box", "random_box", "whole_image")]


@pytest.mark.parametrize(("coords", "convention"), [("float", "normalized_xyxy"), ("int1000", "per_mille_xyxy"),
                                                    ("pixels", "pixels_xyxy")])
def test_grounding_training_rows_ask_the_task_question_and_answer_in_the_renderers_format(root, tmp_path, coords,
                                                                                         convention):
    from baselines.adapters import RENDERER_COORDINATES
    from baselines.grounding_rows import write_grounding_folder
    from evaluators.data import load_rows

    assert RENDERER_COORDINATES[coords] == convention
    write_folder(tmp_path / "refcocog", {"train": refcocog_rows("train", 4), "validation": refcocog_rows("validation", 3)})
    counts = write_grounding_folder(tmp_path / "refcocog", tmp_path / "out", coords=coords,
                                    splits=("train", "validation"), task="refcocog_rec")
    assert counts == {"train": 4, "validation": 6}  # one per training row, one per evaluation sentence
    rows, _ = load_rows({"path": str(tmp_path / "out"), "split": "validation"}, None)
    task = make_task("refcocog_rec", TASK_DIR, data_root=root)
    task.bind_model(Declared(convention, str))
    prompts = [job.request.prompt for job in task.jobs()]
    assert [row["conversations"][0]["value"] for row in rows] == prompts  # trained on the question it is asked
    for row in rows:
        assert row["task"] == "region_grounding" and row["regions"] == []
        parsed = parse_box(row["conversations"][1]["value"], convention, W, H)
        assert parsed.status == "ok" and parsed.box == pytest.approx((20.0, 30.0, 140.0, 200.0), abs=0.7)


def test_the_image_coords_baseline_is_supervised_on_the_box_text(tmp_path, one_torch_thread):
    """A derived row goes through the image_coords baseline's processor; only the box text (and the closing
    marker) is supervised, so training on these rows teaches the model to answer grounding questions."""
    import yaml
    from PIL import Image

    from baselines.grounding_rows import grounding_rows
    from baselines.image_level import build_image_model

    tiny = yaml.safe_load((TASK_DIR.parent.parent / "architecture" / "tiny.yaml").read_text())
    model, processor = build_image_model({**tiny, "renderer": {"name": "image_coords"}})
    row = next(grounding_rows(refcocog_rows("train", 1), load_task_config("refcocog_rec", TASK_DIR)["prompt"], "float"))
    batch = processor([row], images=[Image.new("RGB", (640, 480))])
    supervised = batch["labels"][0][batch["labels"][0] != -100]
    text = processor.tokenizer.decode(supervised)
    assert text.startswith("[0.031, 0.062, 0.219, 0.417]")
    assert float(model(**batch).loss) > 0


def test_a_task_setting_outside_its_choices_is_refused_with_the_task_name():
    from evaluators.tasks.grounding import GroundingTask
    from evaluators.tasks.roc import RocBinaryTask

    with pytest.raises(ValueError, match=r"task g: items must be one of \['expression', 'phrase'\], got 'word'"):
        GroundingTask("g", {"items": "word"})
    with pytest.raises(ValueError, match=r"task g: box_protocol must be one of \['any', 'merged'\], got 'mean'"):
        GroundingTask("g", {"box_protocol": "mean"})
    with pytest.raises(ValueError, match=r"task r: pairs must be one of \['drawn', 'file'\], got 'all'"):
        RocBinaryTask("r", {"pairs": "all"})
    assert GroundingTask("g", {}).items_kind == "expression" and RocBinaryTask("r", {}).pairs == "drawn"
