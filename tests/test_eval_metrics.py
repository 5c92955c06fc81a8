"""Metrics: captioning equals COCOEvalCap (the bootstrap is in tests/test_eval_statistics.py), letter
parsing, semantic similarity and IoU."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from evaluators.metrics import captioning
from evaluators.metrics.captioning import CAPTION_METRICS, score_captions, spice_unavailable_reason
from evaluators.metrics.choice import correct, letter_distribution, parse_letter
from evaluators.metrics.meteor import PipelinedMeteor
from evaluators.metrics.semantic import normalize_category, semantic_iou, semantic_similarity


@pytest.fixture(scope="module")
def coco_captions(realdata):
    """(predictions, references): for each real COCO image, one of its captions is the prediction
    (lightly edited for half of them, another image's caption for a quarter, empty for one)."""
    data = json.loads((realdata / "coco" / "coco_mini_2017" / "captions_train2017.json").read_text())
    by_image = defaultdict(list)
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        by_image[ann["image_id"]].append(ann["caption"])
    images = sorted(by_image)[:40]
    predictions, references = [], []
    for k, image in enumerate(images):
        captions = by_image[image]
        prediction = captions[0]
        if k % 2:
            prediction = prediction.replace(" a ", " the ", 1) + " in the picture"
        if k % 4 == 3:
            prediction = by_image[images[k - 1]][1]
        predictions.append(prediction)
        references.append(captions[1:])
    predictions[5] = ""
    return predictions, references


def _coco_eval(predictions, references, monkeypatch, meteor):
    """pycocoevalcap's own COCOEvalCap on the same captions (SPICE stubbed when its jars are absent)."""
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    monkeypatch.setattr(coco_eval, "Meteor", lambda: meteor)
    if spice_unavailable_reason() is not None:
        class NoSpice:
            def compute_score(self, gts, res):
                return float("nan"), [float("nan")] * len(gts)

            def method(self):
                return "SPICE"

        monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(predictions))],
                  "annotations": [{"image_id": i, "id": 1000 * i + j, "caption": text}
                                  for i, refs in enumerate(references) for j, text in enumerate(refs)]}
    gt.createIndex()
    results = gt.loadRes([{"image_id": i, "caption": text} for i, text in enumerate(predictions)])
    evaluator = coco_eval.COCOEvalCap(gt, results)
    evaluator.params["image_id"] = results.getImgIds()
    evaluator.evaluate()
    return evaluator


def test_caption_scores_equal_cocoevalcap(coco_captions, monkeypatch):
    from pycocoevalcap.meteor.meteor import Meteor

    predictions, references = coco_captions
    # One METEOR JVM (~10 CPU-seconds to start) serves both: pycocoevalcap's client in COCOEvalCap, ours here.
    toolkit_meteor = Meteor()
    monkeypatch.setattr(captioning, "shared_meteor", lambda: PipelinedMeteor(process=toolkit_meteor.meteor_p))
    ours = score_captions(predictions, references)
    theirs = _coco_eval(predictions, references, monkeypatch, toolkit_meteor)
    for name in CAPTION_METRICS:
        assert ours.corpus[name] == pytest.approx(100 * theirs.eval[name], rel=1e-9, abs=1e-9), name
        per_image = [100 * theirs.imgToEval[i][name] for i in range(len(predictions))]
        assert ours.per_item[name] == pytest.approx(per_image, rel=1e-9, abs=1e-9), name
    assert 0 < ours.corpus["CIDEr"] and ours.per_item["CIDEr"][5] == 0  # the empty prediction scores nothing
    if spice_unavailable_reason() is None:
        assert ours.corpus["SPICE"] == pytest.approx(100 * theirs.eval["SPICE"])
    else:  # reported as unavailable with the reason, never as a score
        assert "SPICE" not in ours.corpus and ours.unavailable["SPICE"] == spice_unavailable_reason()


def test_spice_is_unavailable_not_zero_without_its_jars(tmp_path, monkeypatch):
    import pycocoevalcap.spice as spice_package

    fake = tmp_path / "spice"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "spice-1.0.jar").write_bytes(b"")  # SPICE itself, but not the CoreNLP jars it needs
    monkeypatch.setattr(spice_package, "__file__", str(fake / "__init__.py"))
    reason = spice_unavailable_reason()
    assert reason is not None and "stanford-corenlp-3.6.0.jar" in reason
    assert "spice-1.0.jar" not in reason
    assert captioning.spice_skip_reason(None) == reason
    assert captioning.spice_skip_reason(False) == "disabled in the task config"
    for name in captioning.SPICE_JARS[1:]:
        (fake / name).parent.mkdir(exist_ok=True)
        (fake / name).write_bytes(b"")
    assert spice_unavailable_reason() is None  # all jars present: SPICE runs (when java is on PATH)


def test_captions_without_references_are_refused():
    with pytest.raises(ValueError, match="item 1 has no reference"):
        captioning.tokenize_once(["a", "b"], [["a"], []])


@pytest.mark.parametrize(("answer", "expected"), [
    ("(C)", 2), ("(c)", 2), ("( B )", 1), ("C", 2), ("C.", 2), ("D) the dog", 3), ("B, because", 1),
    ("The answer is (A).", 0), ("The answer is D", 3), ("Answer: b", 1), ("I pick option C.", 2),
    ("(B) not (C)", 1), ("Between (A) and (B), (B)", 0),
    ("A man is holding the umbrella.", None),  # an article, not a letter
    ("Because it is raining", None), ("", None), ("(E)", None), ("E", None), ("The answer is Dog", None),
    ("  A", 0), ("BECAUSE", None),
])
def test_letter_parsing(answer, expected):
    assert parse_letter(answer, 4) == expected


def test_letter_parsing_respects_the_number_of_choices():
    assert parse_letter("(E)", 5) == 4
    assert parse_letter("(C)", 2) is None
    with pytest.raises(ValueError):
        parse_letter("(A)", 0)


def test_letter_distribution_and_unparsable_answers_count_as_wrong():
    predicted = [0, 0, None, 2, 0]
    gold = [0, 1, 2, 2, 3]
    assert correct(predicted, gold) == [1.0, 0.0, 0.0, 1.0, 0.0]
    dist = letter_distribution(predicted, gold)
    assert dist["predicted"] == {"A": 0.6, "B": 0.0, "C": 0.2, "D": 0.0}
    assert dist["gold"] == {"A": 0.2, "B": 0.2, "C": 0.4, "D": 0.2}
    assert dist["unparsable"] == 1


@pytest.mark.parametrize(("raw", "name"), [
    ("baseball_bat", "baseball bat"), ("bow_(weapon)", "bow"), ("cover_(lid)", "cover"),
    ("person", "person"), ("  traffic  light ", "traffic light"), ("pan_(for_cooking)", "pan"),
])
def test_category_names_are_normalised(raw, name):
    assert normalize_category(raw) == name


def test_semantic_iou():
    assert semantic_iou("baseball bat", "baseball bat") == 100.0
    assert semantic_iou("a baseball bat", "baseball bat") == pytest.approx(100 * 2 / 3)
    assert semantic_iou("Dog.", "dog") == 100.0
    assert semantic_iou("", "dog") == 0.0 and semantic_iou("", "") == 0.0


def test_semantic_similarity_with_minilm():
    scores = semantic_similarity(["dog", "puppy", "truck", "", "Dog"], ["dog", "dog", "dog", "dog", "dog"])
    assert scores[0] == pytest.approx(100.0, abs=1e-3)
    assert scores[0] > scores[1] > scores[2] > 0
    assert scores[3] == 0.0  # no answer, no similarity
    assert scores[4] > 80  # the embedding model is case-sensitive only a little
