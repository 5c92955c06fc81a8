"""Visual Genome v1.2: the six annotation files, streamed one image record at a time, and the images.

Entry *i* of every file describes image *i* of ``image_data.json`` (the real release's layout,
docs/formats.md#visual-genome-release-files). The same :class:`VgWriter` writes the small releases
(with pictures) and the full-size annotation-only release (``scale=vg_full``, see
:mod:`builders.synthetic.vg_full`).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from builders.seeding import row_rng
from builders.synthetic.files import JsonArrayWriter
from builders.synthetic.language import region_phrase, relation_phrase
from builders.synthetic.scene import Scene, SceneObject, relation_holds
from builders.synthetic.vocab import RELATIONS, SHAPE_SYNSET, number_word
from builders.synthetic.world import World

RELATION_NAMES = tuple(RELATIONS)
FILES = ("image_data", "region_descriptions", "objects", "attributes", "relationships", "question_answers")
TEST_EVERY = 8  # every eighth own VG picture is held out for evaluation (``test_image_ids.txt``)
URL = "https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"


def image_folder(image_id: int) -> str:
    """Real VG images live in two folders; every fifth synthetic image goes to the second one."""
    return "VG_100K_2" if image_id % 5 == 0 else "VG_100K"


class VgWriter:
    """Appends one image to all six files at once; ids of regions, objects, ... are global counters."""

    def __init__(self, root: Path):
        self.root = root
        self.files = {name: JsonArrayWriter(root / f"{name}.json") for name in FILES}
        self.next_id = Counter({"region": 1, "object": 1, "relationship": 1, "qa": 1})
        self.counts = Counter()

    def _id(self, kind: str) -> int:
        value = self.next_id[kind]
        self.next_id[kind] += 1
        return value

    def add(self, scene: Scene, image_id: int, rng: random.Random, *, coco_id: int | None = None,
            flickr_id: int | None = None, extra_regions: int = 2, max_relationships: int = 6,
            max_questions: int = 4) -> None:
        self.files["image_data"].append(
            {"width": scene.width, "url": URL.format(folder=image_folder(image_id), image_id=image_id),
             "height": scene.height, "image_id": image_id, "coco_id": coco_id, "flickr_id": flickr_id})
        object_ids = [self._id("object") for _ in scene.objects]
        self._objects(scene, image_id, object_ids, rng)
        pairs = self._related_pairs(scene, rng, max(extra_regions, max_relationships))
        self._regions(scene, image_id, pairs[:extra_regions], rng)
        self._relationships(scene, image_id, object_ids, pairs[:max_relationships])
        self._questions(scene, image_id, rng, max_questions)
        self.counts["images"] += 1

    def _objects(self, scene: Scene, image_id: int, object_ids: list[int], rng: random.Random) -> None:
        objects, attributes = [], []
        for obj, object_id in zip(scene.objects, object_ids, strict=True):
            x, y, w, h = obj.xywh
            record = {"synsets": [SHAPE_SYNSET[obj.shape]], "h": h, "object_id": object_id, "names": [obj.shape],
                      "w": w, "y": y, "x": x}
            objects.append(record)
            with_attributes = dict(record)
            if rng.random() < 0.8:  # the real file omits ``attributes`` on about a third of the objects
                with_attributes = {**{k: record[k] for k in ("synsets", "h", "object_id", "names", "w")},
                                   "attributes": [obj.size, obj.colour] + ([obj.texture] if obj.texture != "plain"
                                                                           else []),
                                   "y": y, "x": x}
            attributes.append(with_attributes)
        self.files["objects"].append_raw(orjson.dumps({"image_id": image_id, "objects": objects}))
        self.files["attributes"].append_raw(orjson.dumps({"image_id": image_id, "attributes": attributes}))
        self.counts["objects"] += len(objects)

    @staticmethod
    def _related_pairs(scene: Scene, rng: random.Random, wanted: int) -> list[tuple[int, str, int]]:
        """Up to ``wanted`` (subject, relation, object) index triples that hold on the boxes."""
        n = len(scene.objects)
        found: list[tuple[int, str, int]] = []
        draw = rng.random  # index arithmetic on random(): ``rng.sample`` would dominate vg_full's run time
        for _ in range(wanted * 3):
            if len(found) >= wanted or n < 2:
                break
            a, b = int(draw() * n), int(draw() * (n - 1))
            b += b >= a
            relation = RELATION_NAMES[int(draw() * len(RELATION_NAMES))]
            if relation_holds(relation, scene.objects[a], scene.objects[b]) and (a, relation, b) not in found:
                found.append((a, relation, b))
        return found

    def _regions(self, scene: Scene, image_id: int, pairs: list[tuple[int, str, int]], rng: random.Random) -> None:
        regions = []
        for obj in scene.objects:
            regions.append(self._region(image_id, obj.box, region_phrase(obj, scene, rng)))
        for a, relation, b in pairs:
            first, second = scene.objects[a], scene.objects[b]
            union = (min(first.box[0], second.box[0]), min(first.box[1], second.box[1]),
                     max(first.box[2], second.box[2]), max(first.box[3], second.box[3]))
            regions.append(self._region(image_id, union, relation_phrase(first, relation, second)))
        self.files["region_descriptions"].append_raw(orjson.dumps({"regions": regions, "id": image_id}))
        self.counts["regions"] += len(regions)

    def _region(self, image_id: int, box: tuple[int, int, int, int], phrase: str) -> dict[str, Any]:
        return {"region_id": self._id("region"), "width": box[2] - box[0], "height": box[3] - box[1],
                "image_id": image_id, "phrase": phrase, "y": box[1], "x": box[0]}

    def _relationships(self, scene: Scene, image_id: int, object_ids: list[int], pairs: list[tuple[int, str, int]]) -> None:
        def endpoint(obj: SceneObject, object_id: int) -> dict[str, Any]:
            x, y, w, h = obj.xywh
            return {"name": obj.shape, "h": h, "object_id": object_id, "synsets": [SHAPE_SYNSET[obj.shape]],
                    "w": w, "y": y, "x": x}

        scene_objects = scene.objects
        records = [{"predicate": relation, "object": endpoint(scene_objects[b], object_ids[b]),
                    "relationship_id": self._id("relationship"), "synsets": [RELATIONS[relation]],
                    "subject": endpoint(scene_objects[a], object_ids[a])} for a, relation, b in pairs]
        self.files["relationships"].append_raw(orjson.dumps({"relationships": records, "image_id": image_id}))
        self.counts["relationships"] += len(records)

    def _questions(self, scene: Scene, image_id: int, rng: random.Random, wanted: int) -> None:
        """Counting questions (by shape, colour, size) and colour questions about shapes that occur once (answerable from the picture)."""
        shapes = Counter(obj.shape for obj in scene.objects)
        colours = Counter(obj.colour for obj in scene.objects)
        sizes = Counter(obj.size for obj in scene.objects)
        candidates = [(f"How many {shape}s are there?", f"{number_word(n).capitalize()}.")
                      for shape, n in sorted(shapes.items())]
        candidates += [(f"How many {colour} shapes are there?", f"{number_word(n).capitalize()}.")
                       for colour, n in sorted(colours.items())]
        candidates += [(f"How many {size} shapes are there?", f"{number_word(n).capitalize()}.")
                       for size, n in sorted(sizes.items())]
        candidates += [(f"What color is the {obj.shape}?", f"{obj.colour.capitalize()}.")
                       for obj in scene.objects if shapes[obj.shape] == 1]
        chosen = rng.sample(candidates, min(wanted, len(candidates)))
        qas = [{"a_objects": [], "question": q, "image_id": image_id, "qa_id": self._id("qa"), "answer": a,
                "q_objects": []} for q, a in chosen]
        self.files["question_answers"].append_raw(orjson.dumps({"id": image_id, "qas": qas}))
        self.counts["qas"] += len(qas)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def write(world: World, root: Path) -> dict[str, int]:
    """Own VG pictures first, then COCO and Flickr30K pictures (``coco_id`` / ``flickr_id`` set)."""
    entries: list[tuple[Scene, dict[str, int]]] = [(world.scene(f"vg:{i}"), {}) for i in range(world.scale.vg_own)]
    entries += [(scene, {"coco_id": image_id}) for image_id, scene in
                world.coco_scenes("train")[:world.scale.vg_from_coco]]
    entries += [(scene, {"flickr_id": image_id}) for image_id, scene in
                world.flickr_scenes("train")[:world.scale.vg_from_flickr]]
    writer = VgWriter(root)
    held_out = [str(image_id) for image_id in range(1, world.scale.vg_own + 1) if image_id % TEST_EVERY == 0]
    for image_id, (scene, links) in enumerate(entries, start=1):
        world.image(scene, root / image_folder(image_id) / f"{image_id}.jpg")
        writer.add(scene, image_id, row_rng(world.seed, f"vg:{image_id}"), **links)
    writer.close()
    (root / "test_image_ids.txt").write_text("# held-out VG images (own pictures only)\n" + "\n".join(held_out) + "\n")
    return {**writer.counts, "test_images": len(held_out)}

