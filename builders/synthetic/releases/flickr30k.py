"""Flickr30K Entities: ``Annotations/<id>.xml``, ``Sentences/<id>.txt``, split files and the images.

A coreference chain is a group of objects with the same colour and shape ("two red circles"); the backdrop is
a ``scene`` chain without a box, and some captions carry a ``notvisual`` pronoun (chain 0), as the real
files do. Boxes are written VOC style, 1-based and inclusive (docs/formats.md#flickr30k-annotation-xml).
"""

from __future__ import annotations

import random
from pathlib import Path

from builders.seeding import row_rng
from builders.synthetic.language import group_phrase
from builders.synthetic.scene import Scene, SceneObject, relation_holds
from builders.synthetic.vocab import RELATIONS
from builders.synthetic.world import World

CAPTIONS_PER_IMAGE = 5


def chains_of(scene: Scene) -> list[list[SceneObject]]:
    """Objects grouped by (colour, shape), in order of first appearance."""
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in scene.objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    return list(groups.values())


def entity(chain_id: int, kind: str, text: str) -> str:
    return f"[/EN#{chain_id}/{kind} {text}]"


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def captions(scene: Scene, chain_ids: list[int], scene_id: int, rng: random.Random) -> list[str]:
    """Five true captions; each mentions one or more chains by their group phrase."""
    chains = chains_of(scene)
    phrases = [entity(cid, "other", group_phrase(chain)) for cid, chain in zip(chain_ids, chains, strict=True)]
    backdrop = entity(scene_id, "scene", f"a {scene.background.name} background")
    options: list[str] = []
    for i, phrase in enumerate(phrases):
        verb = "is" if len(chains[i]) == 1 else "are"
        options.append(f"There {verb} {phrase} on {backdrop} .")
        for j, other in enumerate(phrases):
            if i == j:
                continue
            options.append(f"{phrase} and {other} on {backdrop} .")
            for relation in RELATIONS:
                if all(relation_holds(relation, a, b) for a in chains[i] for b in chains[j]):
                    options.append(f"{phrase} {verb} {relation} {other} .")
        if len(chains[i]) == 1 and chains[i][0].texture != "plain":
            options.append(f"{phrase} ; {entity(0, 'notvisual', 'it')} is {chains[i][0].texture} .")
    options = list(dict.fromkeys(options))
    chosen = rng.sample(options, min(CAPTIONS_PER_IMAGE, len(options)))
    chosen += [rng.choice(options) for _ in range(CAPTIONS_PER_IMAGE - len(chosen))]  # few chains: repeat
    return [_capital_entity(caption) for caption in chosen]


def _capital_entity(caption: str) -> str:
    """Capitalise the first word of a caption, which may sit inside a leading ``[/EN#.../type word``."""
    if caption.startswith("[/EN#"):
        head, rest = caption.split(" ", 1)
        return f"{head} {_capital(rest)}"
    return _capital(caption)


def annotation_xml(image_id: int, scene: Scene, chain_ids: list[int], scene_id: int) -> str:
    lines = ["<annotation>", f"\t<filename>{image_id}.jpg</filename>",
             f"\t<size>\n\t\t<width>{scene.width}</width>\n\t\t<height>{scene.height}</height>\n"
             "\t\t<depth>3</depth>\n\t</size>"]
    for chain_id, chain in zip(chain_ids, chains_of(scene), strict=True):
        for obj in chain:
            x1, y1, x2, y2 = obj.box
            lines.append(f"\t<object>\n\t\t<name>{chain_id}</name>\n\t\t<bndbox>\n\t\t\t<xmin>{x1 + 1}</xmin>\n"
                         f"\t\t\t<ymin>{y1 + 1}</ymin>\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n"
                         "\t\t</bndbox>\n\t</object>")
    lines.append(f"\t<object>\n\t\t<name>{scene_id}</name>\n\t\t<scene>1</scene>\n\t\t<nobndbox>1</nobndbox>\n"
                 "\t</object>")
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write(world: World, root: Path) -> dict[str, int]:
    counts = {"images": 0, "boxes": 0, "captions": 0}
    next_chain = 100_000
    for split in ("train", "val", "test"):
        ids = []
        for image_id, scene in world.flickr_scenes(split):
            chain_ids = list(range(next_chain, next_chain + len(chains_of(scene))))
            scene_id = next_chain + len(chain_ids)
            next_chain = scene_id + 1
            world.image(scene, root / "flickr30k-images" / f"{image_id}.jpg")
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, scene, chain_ids, scene_id))
            lines = captions(scene, chain_ids, scene_id, row_rng(world.seed, f"flickr:{image_id}"))
            (root / "Sentences").mkdir(parents=True, exist_ok=True)
            (root / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
            ids.append(str(image_id))
            counts["boxes"] += len(scene.objects)
            counts["captions"] += len(lines)
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
        counts["images"] += len(ids)
    return counts
