"""RefCOCO / RefCOCO+ / RefCOCOg in the ``refer`` layout (lichengunc/refer), over COCO train pictures.

``<root>/<dataset>/refs(<splitBy>).p`` + ``instances.json``; images under
``<root>/images/mscoco/images/train2014/COCO_train2014_%012d.jpg`` (hard links to the COCO release's files).
Every sentence is resolved against the ground truth before it is written: it names exactly one object.
RefCOCO+ uses appearance words only (as its annotators were told), RefCOCOg long sentences.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builders.seeding import row_rng
from builders.synthetic.files import write_json, write_pickle
from builders.synthetic.language import (
    Description,
    appearance_expressions,
    location_expressions,
    long_expressions,
)
from builders.synthetic.releases.cocoformat import annotation_id, document, image_record, instance_record
from builders.synthetic.scene import Scene, SceneObject
from builders.synthetic.vocab import SHAPES
from builders.synthetic.world import World

IMAGE_DIR = "images/mscoco/images/train2014"
SENTENCES_PER_REF = 3


def _cycle(*tail: str) -> Callable[[int], str]:
    """Images cycle through 8 slots: the first ``8 - len(tail)`` are train, the rest the given splits."""
    return lambda i: tail[i % 8 - (8 - len(tail))] if i % 8 >= 8 - len(tail) else "train"


# splitBy -> split of the image with index i, with each release's split names (refer README).
SPLIT_SCHEMES: dict[str, Callable[[int], str]] = {
    "unc": _cycle("val", "testA", "testB"),
    "google": _cycle("val"),
    "umd": _cycle("val", "test"),
}
DATASETS: dict[str, tuple[str, ...]] = {"refcoco": ("unc", "google"), "refcoco+": ("unc",),
                                        "refcocog": ("google", "umd")}


def expressions(dataset: str, scene: Scene, obj: SceneObject) -> list[Description]:
    if dataset == "refcoco+":
        return appearance_expressions(scene, obj)
    if dataset == "refcocog":
        return long_expressions(scene, obj)
    return appearance_expressions(scene, obj)[:2] + location_expressions(scene, obj)


def sentence(description: Description, sent_id: int, rng: random.Random) -> dict[str, Any]:
    sent = description.text()
    raw = sent if rng.random() < 0.5 else sent[0].upper() + sent[1:]
    return {"tokens": sent.split(), "raw": raw, "sent_id": sent_id, "sent": sent}


def refs_of(world: World, dataset: str) -> list[dict[str, Any]]:
    """Every ref of ``dataset`` with its ``split`` left to fill per splitBy (``split_index`` kept aside)."""
    refs: list[dict[str, Any]] = []
    sent_id = 0
    for i, (image_id, scene) in enumerate(world.coco_scenes("train")):
        for obj in scene.objects:
            rng = row_rng(world.seed, f"refs:{dataset}:{image_id}:{obj.index}")
            found = expressions(dataset, scene, obj)
            if not found:
                continue
            chosen = rng.sample(found, min(SENTENCES_PER_REF, len(found)))
            sentences = [sentence(d, sent_id + k, rng) for k, d in enumerate(chosen)]
            ref_id = len(refs)
            refs.append({"sent_ids": [s["sent_id"] for s in sentences],
                         "file_name": f"COCO_train2014_{image_id:012d}_{obj.index}.jpg",
                         "ann_id": annotation_id(image_id, obj), "ref_id": ref_id, "image_id": image_id,
                         "split": "", "category_id": SHAPES[obj.shape], "sentences": sentences,
                         "_image_index": i})
            sent_id += len(sentences)
    return refs


def write(world: World, root: Path) -> dict[str, int]:
    counts = {"images": 0, "refs": 0, "sentences": 0}
    scenes = dict(world.coco_scenes("train"))
    for image_id, scene in scenes.items():
        world.image(scene, root / IMAGE_DIR / f"COCO_train2014_{image_id:012d}.jpg")
    counts["images"] = len(scenes)
    for dataset, split_bys in DATASETS.items():
        refs = refs_of(world, dataset)
        used = sorted({ref["image_id"] for ref in refs})
        images = [image_record(image_id, f"COCO_train2014_{image_id:012d}.jpg", scenes[image_id], "train2014")
                  for image_id in used]
        annotations = [instance_record(image_id, obj) for image_id in used for obj in scenes[image_id].objects]
        write_json(root / dataset / "instances.json", document(f"Synthetic {dataset}", images, annotations))
        for split_by in split_bys:
            scheme = SPLIT_SCHEMES[split_by]
            records = [{**{k: v for k, v in ref.items() if k != "_image_index"}, "split": scheme(ref["_image_index"])}
                       for ref in refs]
            write_pickle(root / dataset / f"refs({split_by}).p", records)
        counts["refs"] += len(refs)
        counts["sentences"] += sum(len(ref["sentences"]) for ref in refs)
    return counts
