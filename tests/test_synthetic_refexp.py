"""Every generated referring expression picks out exactly its own object, checked from the ground truth.

The expressions are parsed here with an independent reading of their grammar
(``the [ordinal] [size] [texture] [colour] shape|"shape" [relation the <anchor>]``) and evaluated on
``world.json``'s objects, matched to the refs' COCO annotations by box.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from builders.synthetic import synthesize
from builders.synthetic.vocab import COLOURS, SHAPES, SIZES, TEXTURES

RELATION_WORDS = {("left", "of"): "left of", ("right", "of"): "right of", ("above",): "above", ("below",): "below"}
ORDINAL_AXES = {"leftmost": (0, 1), "rightmost": (0, -1), "highest": (1, 1), "lowest": (1, -1)}
SLOTS = (("size", SIZES), ("texture", TEXTURES), ("colour", COLOURS))


def centre(obj, axis):
    return (obj["box"][axis] + obj["box"][axis + 2]) / 2


def holds(relation, a, b) -> bool:
    ax1, ay1, ax2, ay2 = a["box"]
    bx1, by1, bx2, by2 = b["box"]
    return {"left of": ax2 <= bx1, "right of": bx2 <= ax1, "above": ay2 <= by1, "below": by2 <= ay1}[relation]


def parse_noun_phrase(words: list[str]) -> tuple[dict, int]:
    """``the [ordinal] [size] [texture] [colour] <shape>`` -> (constraints, words used)."""
    assert words[0] == "the", words
    i, found = 1, {}
    if words[i] in ORDINAL_AXES:
        found["ordinal"] = words[i]
        i += 1
    for name, vocabulary in SLOTS:
        if words[i] in vocabulary:
            found[name] = words[i]
            i += 1
    assert words[i] in SHAPES or words[i] == "shape", words
    if words[i] != "shape":
        found["shape"] = words[i]
    return found, i + 1


def evaluate(sentence: str, objects: list[dict]) -> list[dict]:
    words = sentence.split()
    target, used = parse_noun_phrase(words)
    relation = anchor = None
    if used < len(words):
        for key, name in RELATION_WORDS.items():
            if tuple(words[used:used + len(key)]) == key:
                relation, used = name, used + len(key)
                break
        assert relation, sentence
        anchor, anchor_used = parse_noun_phrase(words[used:])
        assert used + anchor_used == len(words) and "ordinal" not in anchor, sentence
    ordinal = target.pop("ordinal", None)
    matches = [o for o in objects if all(o[k] == v for k, v in target.items())]
    if ordinal:
        axis, sign = ORDINAL_AXES[ordinal]
        best = min(sign * centre(o, axis) for o in matches)
        matches = [o for o in matches if sign * centre(o, axis) == best]
    if relation:
        anchors = [o for o in objects if all(o[k] == v for k, v in anchor.items())]
        assert len(anchors) == 1, f"anchor of {sentence!r} is not unique"
        matches = [o for o in matches if o is not anchors[0] and holds(relation, o, anchors[0])]
    return matches


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refexp") / "world"
    synthesize(out, "tiny", seed=7)
    return out


@pytest.mark.parametrize(("dataset", "split_by"), [("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd")])
def test_every_expression_names_exactly_its_object(world, dataset, split_by):
    manifest = json.loads((world / "world.json").read_text())
    scenes = {Path(path).name: scene for scene in manifest["scenes"] for path in scene["files"]}
    instances = json.loads((world / "refer" / dataset / "instances.json").read_text())
    images = {image["id"]: image["file_name"] for image in instances["images"]}
    boxes = {ann["id"]: [round(v) for v in ann["bbox"]] for ann in instances["annotations"]}
    with open(world / "refer" / dataset / f"refs({split_by}).p", "rb") as handle:
        refs = pickle.load(handle)
    sentences = 0
    for ref in refs:
        objects = scenes[images[ref["image_id"]]]["objects"]
        x, y, w, h = boxes[ref["ann_id"]]
        (referred,) = [o for o in objects if o["box"] == [x, y, x + w, y + h]]
        for sentence in ref["sentences"]:
            assert sentence["sent"] == sentence["raw"].lower() and sentence["tokens"] == sentence["sent"].split()
            assert evaluate(sentence["sent"], objects) == [referred], (ref["ref_id"], sentence["sent"])
            if dataset == "refcoco+":
                assert not set(sentence["tokens"]) & {"left", "right", "above", "below", *ORDINAL_AXES}
            sentences += 1
    assert sentences > len(refs)  # several sentences per ref, as in the real releases


def test_the_checker_rejects_an_ambiguous_expression():
    """The independent evaluator is not vacuous: an expression shared by two objects resolves to both."""
    objects = [{"shape": "circle", "colour": "red", "size": "small", "texture": "plain", "box": [0, 0, 10, 10]},
               {"shape": "circle", "colour": "red", "size": "large", "texture": "plain", "box": [50, 0, 80, 30]},
               {"shape": "square", "colour": "blue", "size": "small", "texture": "plain", "box": [100, 0, 110, 10]}]
    assert len(evaluate("the red circle", objects)) == 2
    assert evaluate("the leftmost red circle", objects) == [objects[0]]
    assert evaluate("the red circle left of the blue square", objects) == objects[:2]
    assert evaluate("the large circle", objects) == [objects[1]]
