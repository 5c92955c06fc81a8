"""Grounding training rows for the ``image_coords`` baseline, derived from built RefCOCO/+/g folders.

The grounding tasks (:mod:`evaluators.tasks.grounding`) ask for a box from an expression; a model learns to
answer only from rows that ask the same question and answer with a box in its own convention. The RefCOCO
builders write captioning rows (region -> sentence); this module turns each (region, sentence) of a built folder
into the reverse row, region_grounding: the human turn is the grounding task's own prompt (its config's
template with the convention's format sentence), the assistant turn is the box as the ``image_coords`` renderer
writes it (``float``: normalised, 3 decimals -> ``normalized_xyxy``; ``int1000`` -> ``per_mille_xyxy``;
``pixels`` -> ``pixels_xyxy``), so
training and evaluation read the same text. The row has no regions: the model must find the object.

The output is a built folder (``data/<split>-*.parquet``, the schema's features) that a corpus recipe lists as
an existing ``build``::

    gpt4roi grounding_rows built=<data_root>/refcocog out=<data_root>/refcocog_grounding coords=float

Rows are derived, not built: nothing here reads a raw release, and ``builders`` stays unaware of grounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from builders.placeholders import IMAGE_TOKEN
from builders.schema import validate
from builders.storage.output import ShardedParquetWriter, atomic_directory
from evaluators.data import load_rows
from evaluators.runner import default_task_dir
from evaluators.tasks import load_task_config
from evaluators.tasks.grounding import FORMAT_SENTENCES

from .adapters import RENDERER_COORDINATES
from .renderers import RegionRenderer

TASK = "region_grounding"


def grounding_rows(rows: list[Mapping[str, Any]], prompt: str, coords: str = "float") -> Iterator[dict[str, Any]]:
    """One region_grounding row per (single-region row, sentence): every ``references`` sentence of an evaluation
    row, or the assistant's sentence of a training row. ``prompt`` has ``{format}`` and ``{expression}``."""
    renderer = RegionRenderer(name="image_coords", coords=coords)
    format_sentence = FORMAT_SENTENCES[RENDERER_COORDINATES[coords]]
    for row in rows:
        if len(row["regions"]) != 1:
            continue
        sentences = list(row["references"]) or [t["value"] for t in row["conversations"] if t["from"] == "gpt"][:1]
        box = renderer.box_text(row, 1)
        for k, sentence in enumerate(s.strip() for s in sentences):
            if not sentence:
                continue
            derived = {**row, "id": f"{row['id']}:g{k}", "task": TASK, "regions": [], "choices": [], "label": -1,
                       "references": [],
                       "conversations": [
                           {"from": "human",
                            "value": f"{IMAGE_TOKEN}\n{prompt.format(format=format_sentence, expression=sentence)}"},
                           {"from": "gpt", "value": box}]}
            validate(derived)
            yield derived


def write_grounding_folder(built: str | Path, out: str | Path, *, coords: str = "float", splits: tuple[str, ...] =
                           ("train",), task: str = "refcoco_rec", task_dir: str | Path | None = None) -> dict[str, int]:
    """Derive the rows of ``splits`` of the built folder ``built`` into the built folder ``out``; rows per split.

    The prompt is the one of grounding task ``task`` (``conf/eval/task/<task>.yaml``), so that the model is
    trained on the question it is evaluated with.
    """
    if coords not in RENDERER_COORDINATES:
        raise ValueError(f"coords={coords!r}; one of {sorted(RENDERER_COORDINATES)} (the image_coords formats)")
    prompt = load_task_config(task, Path(task_dir) if task_dir else default_task_dir())["prompt"]
    counts = {}
    with atomic_directory(Path(out)) as tmp:
        for split in splits:
            rows, _ = load_rows({"path": str(Path(built).resolve()), "split": split}, None)
            writer = ShardedParquetWriter(tmp / "data", split)
            derived = list(grounding_rows(rows, prompt, coords))
            if not derived:
                raise ValueError(f"{built}: split {split!r} has no single-region row with a sentence to ground")
            writer.write_all(derived)
            writer.close()
            counts[split] = len(derived)
    return counts


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi grounding_rows built=<folder> out=<folder> [coords=float|int1000]``."""
    counts = write_grounding_folder(cfg.built, cfg.out, coords=cfg.coords, splits=tuple(cfg.splits), task=cfg.task)
    for split, count in counts.items():
        print(f"{cfg.out}: {split}: {count} region_grounding rows")
    return 0
