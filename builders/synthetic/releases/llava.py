"""LLaVA-Instruct: ``conversation_58k.json``, ``detail_23k.json``, ``complex_reasoning_77k.json``, their union
``llava_instruct_150k.json``, the detection pickle GPT4RoI's ``det_llava`` reads, and ``train2017`` images.

Conversations are about COCO train pictures (as in the real release) and every answer is computed from the
ground truth. ``<image>`` opens or closes the first question at random, as in the released files.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from builders.seeding import row_rng
from builders.synthetic.files import write_json, write_pickle
from builders.synthetic.language import (
    group_phrase,
    join_words,
    left_to_right,
    noun_phrase,
    scene_description,
    shared_attribute_pairs,
)
from builders.synthetic.scene import Scene
from builders.synthetic.vocab import COLOURS, SHAPES, number_word
from builders.synthetic.world import World

DETECTION_FILE = "llava_150k_bbox_pred_results.pkl"


def _with_image(question: str, rng: random.Random) -> str:
    return f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"


def _record(image_id: int, turns: list[tuple[str, str]], rng: random.Random) -> dict[str, Any]:
    conversations = []
    for k, (question, answer) in enumerate(turns):
        conversations.append({"from": "human", "value": _with_image(question, rng) if k == 0 else question})
        conversations.append({"from": "gpt", "value": answer})
    return {"id": f"{image_id:012d}", "image": f"{image_id:012d}.jpg", "conversations": conversations}


def _side(scene: Scene, x: float) -> str:
    third = scene.width / 3
    return "left" if x < third else "right" if x > 2 * third else "middle"


def conversation(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    groups: dict[tuple[str, str], list] = {}
    for obj in scene.objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    listing = join_words([group_phrase(objs) for objs in groups.values()])
    turns = [("How many shapes can you see?", f"There are {number_word(len(scene.objects))} shapes: {listing}.")]
    present = rng.choice(scene.objects)
    turns.append((f"Is there a {present.colour} {present.shape} in the picture?",
                  f"Yes, there is {noun_phrase(present)} in the {_side(scene, present.centre[0])} part of the image."))
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in groups]
    colour, shape = rng.choice(absent)
    turns.append((f"Do you see a {colour} {shape}?",
                  f"No, there is no {colour} {shape} in this image."))
    return turns


def complex_reasoning(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    ordered = left_to_right(scene)
    first, last = ordered[0], ordered[-1]
    pairs = shared_attribute_pairs(scene)
    reason = ""
    if pairs:
        a, b, name = rng.choice(pairs)
        reason = (f" Note that the {a.shape} and the {b.shape} are both {a.attribute(name)}, so naming the {name} "
                  "alone would not tell them apart; their position does.")
    colours = Counter(obj.colour for obj in scene.objects)
    common, n = colours.most_common(1)[0]
    return [("Which object is furthest to the left and which is furthest to the right, and which colour is "
             "most frequent?",
             f"The object furthest to the left is {noun_phrase(first)}, and the one furthest to the right is "
             f"{noun_phrase(last)}. The most frequent colour is {common}, with {number_word(n)} "
             f"object{'s' if n > 1 else ''}.{reason}")]


def detections(image_id: int, scene: Scene, rng: random.Random) -> dict[str, Any]:
    """Detector output in GPT4RoI's pickle layout: normalised xyxy + score, class index into ``SHAPES``."""
    classes = list(SHAPES)
    boxes = [[o.box[0] / scene.width, o.box[1] / scene.height, o.box[2] / scene.width, o.box[3] / scene.height,
              rng.uniform(0.5, 1.0)] for o in scene.objects]
    return {"filename": f"{image_id:012d}.jpg", "pred_bboxes": np.asarray(boxes, dtype=np.float32),
            "labels": np.asarray([classes.index(o.shape) for o in scene.objects], dtype=np.int64)}


def write(world: World, root: Path) -> dict[str, int]:
    files: dict[str, list[dict[str, Any]]] = {"conversation_58k": [], "detail_23k": [], "complex_reasoning_77k": []}
    predictions = []
    for i, (image_id, scene) in enumerate(world.coco_scenes("train")):
        world.image(scene, root / "train2017" / f"{image_id:012d}.jpg")
        rng = row_rng(world.seed, f"llava:{image_id}")
        files["conversation_58k"].append(_record(image_id, conversation(scene, rng), rng))
        if i % 2 == 0:
            files["detail_23k"].append(_record(image_id, [("Describe this image in detail.",
                                                           scene_description(scene))], rng))
        files["complex_reasoning_77k"].append(_record(image_id, complex_reasoning(scene, rng), rng))
        predictions.append(detections(image_id, scene, rng))
    for name, records in files.items():
        write_json(root / f"{name}.json", records)
    union = [record for records in files.values() for record in records]
    write_json(root / "llava_instruct_150k.json", union)
    write_pickle(root / DETECTION_FILE, predictions, protocol=4)  # written by Python 3 tools
    return {"images": len(predictions), "conversations": len(union)}
