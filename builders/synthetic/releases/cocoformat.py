"""COCO-format records, shared by the COCO release and RefCOCO's ``instances.json``."""

from __future__ import annotations

from typing import Any

from builders.synthetic.scene import Scene, SceneObject
from builders.synthetic.vocab import SHAPES, SUPERCATEGORY

LICENSES = [{"url": "http://creativecommons.org/licenses/by/4.0/", "id": 1, "name": "Synthetic (CC BY 4.0)"}]


def annotation_id(image_id: int, obj: SceneObject) -> int:
    return image_id * 100 + obj.index + 1


def polygon_area(polygon: tuple[tuple[float, float], ...]) -> float:
    twice = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True))
    return round(abs(twice) / 2, 2)


def categories() -> list[dict[str, Any]]:
    return [{"supercategory": SUPERCATEGORY[name], "id": cid, "name": name} for name, cid in SHAPES.items()]


def image_record(image_id: int, file_name: str, scene: Scene, folder: str) -> dict[str, Any]:
    return {"license": 1, "file_name": file_name, "coco_url": f"http://images.example.org/{folder}/{file_name}",
            "height": scene.height, "width": scene.width, "date_captured": "2026-01-01 00:00:00",
            "flickr_url": "", "id": image_id}


def instance_record(image_id: int, obj: SceneObject) -> dict[str, Any]:
    x, y, w, h = obj.xywh
    return {"segmentation": [[coord for point in obj.polygon for coord in point]], "area": polygon_area(obj.polygon),
            "iscrowd": 0, "image_id": image_id, "bbox": [float(x), float(y), float(w), float(h)],
            "category_id": SHAPES[obj.shape], "id": annotation_id(image_id, obj)}


def document(description: str, images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"info": {"description": description, "url": "", "version": "1.0", "year": 2026,
                     "contributor": "gpt4roi-suite synthetic world", "date_created": "2026/01/01"},
            "licenses": LICENSES, "images": images, "annotations": annotations, "categories": categories()}
