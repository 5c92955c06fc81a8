"""The preprocessed variants GPT4RoI trained on, converted from the synthetic originals as their authors
converted the real ones: MDETR's RefCOCO/+/g and Flickr30K files, GRiT's Visual Genome files.

Each converter reads only the original files just written (never the world's ground truth), so the
variants agree with the originals by construction. They go into the same raw roots; every builder's
``layout: auto`` prefers the original layout when both are present, so ``layout=mdetr`` / ``layout=grit``
selects them.
"""

from __future__ import annotations

import pickle
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson

from builders.boxes import box_iou
from builders.synthetic.files import link_or_copy, write_json

# MDETR converted refs(unc) for RefCOCO and RefCOCO+, refs(umd) for RefCOCOg
# (docs/formats.md#refcoco-mdetr-files).
MDETR_REFEXP = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
ENTITY = re.compile(r"\[/EN#(\d+)/(\S+) ([^\]]+)\]")


def mdetr_refexp(root: Path) -> dict[str, int]:
    """``mdetr_annotations/finetune_<dataset>_<split>.json``: one image entry per (ref, sentence)."""
    files = 0
    for dataset, split_by in MDETR_REFEXP.items():
        instances = orjson.loads((root / dataset / "instances.json").read_bytes())
        with open(root / dataset / f"refs({split_by}).p", "rb") as handle:
            refs = pickle.load(handle)
        images = {image["id"]: image for image in instances["images"]}
        anns = {ann["id"]: ann for ann in instances["annotations"]}
        by_split: dict[str, dict[str, list]] = {}
        for ref in refs:
            image, ann = images[ref["image_id"]], anns[ref["ann_id"]]
            entry = by_split.setdefault(ref["split"], {"images": [], "annotations": []})
            for sentence in ref["sentences"]:
                new_id = len(entry["images"])
                caption = sentence["sent"]
                head_end = _head_noun_end(caption)
                entry["images"].append({"file_name": image["file_name"], "height": image["height"],
                                        "width": image["width"], "id": new_id, "original_id": image["id"],
                                        "caption": caption, "dataset_name": dataset,
                                        "tokens_negative": [[0, head_end]]})
                entry["annotations"].append({"area": ann["area"], "iscrowd": 0, "category_id": ann["category_id"],
                                             "image_id": new_id, "id": new_id, "bbox": ann["bbox"],
                                             "original_id": ann["id"], "tokens_positive": [[0, head_end]]})
        for split, entry in sorted(by_split.items()):
            write_json(root / "mdetr_annotations" / f"finetune_{dataset}_{split}.json",
                       {"info": instances["info"], "licenses": instances["licenses"], **entry,
                        "categories": instances["categories"]})
            files += 1
    return {"mdetr_files": files}


def _head_noun_end(caption: str) -> int:
    """End of the root noun phrase: before a relation (``... left of the ...``), else the whole caption."""
    for marker in (" left of ", " right of ", " above ", " below "):
        if marker in caption:
            return caption.index(marker)
    return len(caption)


def mdetr_flickr(root: Path) -> dict[str, int]:
    """``mdetr_annotations/final_flickr_{separateGT,mergedGT}_<split>.json``, as MDETR's ``flickr_combined.py``
    writes them: one image entry per caption; per caption the boxes of every mention are clustered at IoU >= 0.95
    across chains and each cluster is one annotation with the cluster's *last* box and every clustered chain's
    spans (docs/formats.md#flickr30k-mdetr-files)."""
    files = 0
    for split in ("train", "val", "test"):
        separate: dict[str, list] = {"images": [], "annotations": []}
        merged: dict[str, list] = {"images": [], "annotations": []}
        for image_id in (root / f"{split}.txt").read_text().split():
            boxes, size = _voc_boxes(root / "Annotations" / f"{image_id}.xml")
            union = {chain: [[min(b[0] for b in chain_boxes), min(b[1] for b in chain_boxes),
                              max(b[2] for b in chain_boxes), max(b[3] for b in chain_boxes)]]
                     for chain, chain_boxes in boxes.items()}
            lines = (root / "Sentences" / f"{image_id}.txt").read_text().splitlines()
            for sentence_id, line in enumerate(lines):
                caption, mentions = _debracket(line)
                new_id = len(separate["images"])
                entry = {"file_name": f"{image_id}.jpg", "height": str(size[1]), "width": str(size[0]), "id": new_id,
                         "caption": caption, "dataset_name": "flickr", "tokens_negative": [[0, len(caption)]],
                         "sentence_id": sentence_id, "original_img_id": int(image_id),
                         "tokens_positive_eval": [spans for spans in mentions.values()]}
                for data, chain_boxes in ((separate, boxes), (merged, union)):
                    data["images"].append(entry)
                    for voc, spans in _clusters(mentions, chain_boxes):
                        data["annotations"].append(_mdetr_box(len(data["annotations"]), new_id, voc, spans))
        categories = [{"supercategory": "object", "id": 1, "name": "object"}]
        write_json(root / "mdetr_annotations" / f"final_flickr_separateGT_{split}.json", {**separate, "categories": categories})
        write_json(root / "mdetr_annotations" / f"final_flickr_mergedGT_{split}.json", {**merged, "categories": categories})
        files += 2
    return {"mdetr_files": files}


def _clusters(mentions: dict[str, list[list[int]]], chain_boxes: dict[str, list[list[int]]]
              ) -> list[tuple[list[int], list[list[int]]]]:
    """MDETR's ``get_equivalent_boxes``: the caption's boxes (a chain's boxes once per mention of it), joined
    at IoU >= 0.95 by union-find; each cluster gives its last box and the spans of every chain in it."""
    in_order = sorted((span[0], chain) for chain, spans in mentions.items() for span in spans)  # phrase order
    members = [(chain, box) for _, chain in in_order for box in chain_boxes.get(chain, [])]
    parent = list(range(len(members)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, (_, a) in enumerate(members):
        for j, (_, b) in enumerate(members):
            if box_iou(a, b) >= 0.95:  # MDETR's continuous xyxy (no +1)
                parent[find(j)] = find(i)
    clusters: dict[int, list[int]] = {}
    for i in range(len(members)):
        clusters.setdefault(find(i), []).append(i)
    result = []
    for indices in clusters.values():
        chains = dict.fromkeys(members[i][0] for i in indices)
        result.append((members[indices[-1]][1], [span for chain in chains for span in mentions[chain]]))
    return result


def _voc_boxes(path: Path) -> tuple[dict[str, list[list[int]]], tuple[int, int]]:
    tree = ET.parse(path).getroot()
    size = (int(tree.findtext("size/width")), int(tree.findtext("size/height")))
    boxes: dict[str, list[list[int]]] = {}
    for obj in tree.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        coords = [int(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        for name in obj.iter("name"):
            boxes.setdefault(name.text, []).append(coords)
    return boxes, size


def _debracket(line: str) -> tuple[str, dict[str, list[list[int]]]]:
    """The plain caption and, per chain id, the character spans of its phrases (notvisual chain 0 dropped)."""
    caption, mentions, cursor = "", {}, 0
    for match in ENTITY.finditer(line):
        caption += line[cursor:match.start()]
        start = len(caption)
        caption += match.group(3)
        if match.group(1) != "0":
            mentions.setdefault(match.group(1), []).append([start, len(caption)])
        cursor = match.end()
    return caption + line[cursor:], mentions


def _mdetr_box(ann_id: int, image_id: int, voc: list[int], spans: list[list[int]]) -> dict[str, Any]:
    """MDETR keeps the 1-based ``xmin``/``ymin`` and takes ``w = xmax - xmin``.

    See docs/formats.md#flickr30k-mdetr-files.
    """
    x, y, w, h = voc[0], voc[1], voc[2] - voc[0], voc[3] - voc[1]
    return {"area": w * h, "iscrowd": 0, "image_id": image_id, "category_id": 1, "id": ann_id,
            "bbox": [x, y, w, h], "tokens_positive": spans}


def grit_vg(root: Path, image_dir: str = "images") -> dict[str, int]:
    """``VG_preprocessed_annotations/{train,test}.json`` (COCO format, class ``object``, ``caption`` per box).

    The held-out images of ``test_image_ids.txt`` form the test file; pictures are linked under ``images/``.
    """
    image_data = orjson.loads((root / "image_data.json").read_bytes())
    regions = orjson.loads((root / "region_descriptions.json").read_bytes())
    held_out = {int(line) for line in (root / "test_image_ids.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    files: dict[str, dict[str, list]] = {"train": {"images": [], "annotations": []},
                                         "test": {"images": [], "annotations": []}}
    for info, record in zip(image_data, regions, strict=True):
        split = "test" if info["image_id"] in held_out else "train"
        file_name = f"{info['image_id']}.jpg"
        source = root / "/".join(info["url"].rsplit("/", 2)[-2:])
        link_or_copy(source, root / image_dir / file_name)
        files[split]["images"].append({"file_name": file_name, "height": info["height"], "width": info["width"],
                                       "id": info["image_id"]})
        for region in record["regions"]:
            files[split]["annotations"].append({
                "area": region["width"] * region["height"], "iscrowd": 0, "image_id": info["image_id"],
                "category_id": 1, "id": region["region_id"],
                "bbox": [region["x"], region["y"], region["width"], region["height"]], "caption": region["phrase"]})
    categories = [{"supercategory": "object", "id": 1, "name": "object"}]
    for split, entry in files.items():
        write_json(root / "VG_preprocessed_annotations" / f"{split}.json", {**entry, "categories": categories})
    return {"grit_files": len(files)}


CONVERTERS = {"refer": mdetr_refexp, "flickr30k": mdetr_flickr, "vg": grit_vg}
