"""COCO 2017: ``annotations/instances_{train,val}2017.json`` and ``{train,val}2017/%012d.jpg``."""

from __future__ import annotations

from pathlib import Path

from builders.synthetic.files import write_json
from builders.synthetic.releases.cocoformat import document, image_record, instance_record
from builders.synthetic.world import World


def write(world: World, root: Path) -> dict[str, int]:
    counts = {"images": 0, "annotations": 0}
    for split in ("train", "val"):
        folder = f"{split}2017"
        images, annotations = [], []
        for image_id, scene in world.coco_scenes(split):
            file_name = f"{image_id:012d}.jpg"
            world.image(scene, root / folder / file_name)
            images.append(image_record(image_id, file_name, scene, folder))
            annotations += [instance_record(image_id, obj) for obj in scene.objects]
        write_json(root / "annotations" / f"instances_{folder}.json",
                   document(f"Synthetic COCO {folder}", images, annotations))
        counts["images"] += len(images)
        counts["annotations"] += len(annotations)
    return counts
