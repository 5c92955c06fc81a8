"""VCR: ``vcr1annots/{train,val}.jsonl`` and ``vcr1images/<movie>/<frame>.{jpg,json}``.

Each question names a detected object by its index (``[2]`` in tokens, ``3`` in the ``_orig`` strings) and
its answer depends on *that* object: the other choices are true of the distractors (objects of the same
shape), so the question cannot be answered without the region. The rationale describes the object.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from builders.seeding import row_rng
from builders.synthetic.files import write_json, write_jsonl
from builders.synthetic.scene import Scene, SceneObject
from builders.synthetic.vocab import COLOURS, SIZES, TEXTURES
from builders.synthetic.world import World

FRAMES_PER_MOVIE = 3


def tokens(text: str) -> list[str | list[int]]:
    """``"@2 is red ."`` -> ``[[2], "is", "red", "."]``: ``@k`` marks a reference to object index k."""
    return [[int(word[1:])] if word.startswith("@") else word for word in text.split()]


def original(text: str) -> str:
    """The ``_orig`` string: references become 1-based numbers, punctuation sticks to the word before."""
    words = [str(int(word[1:]) + 1) if word.startswith("@") else word for word in text.split()]
    return " ".join(words).replace(" ?", "?").replace(" .", ".").replace(" ,", ",")


def _others(rng: random.Random, correct: str, preferred: list[str], pool: list[str], n: int = 3) -> list[str]:
    """``n`` wrong values: first those of the distractors, then random ones from ``pool``."""
    wrong = [v for v in dict.fromkeys(preferred) if v != correct]
    rest = [v for v in pool if v != correct and v not in wrong]
    rng.shuffle(rest)
    return (wrong + rest)[:n]


def _describe(obj: SceneObject, **change: str) -> str:
    values = {"size": obj.size, "texture": obj.texture, "colour": obj.colour, **change}
    return f"@{obj.index} is a {values['size']} {values['texture']} {values['colour']} {obj.shape} ."


def question(scene: Scene, obj: SceneObject, rng: random.Random) -> dict[str, Any]:
    """A colour or pattern question about ``obj``, four answers, four rationales (one true each)."""
    same_shape = [o for o in scene.objects if o.shape == obj.shape and o is not obj]
    if rng.random() < 0.6:
        q = f"What color is @{obj.index} ?"
        wrong = _others(rng, obj.colour, [o.colour for o in same_shape], list(COLOURS))
        answers = [f"@{obj.index} is {obj.colour} ."] + [f"@{obj.index} is {c} ." for c in wrong]
        rationale_changes = [{"colour": c} for c in wrong]
    else:
        q = f"What pattern does @{obj.index} have ?"
        wrong = _others(rng, obj.texture, [o.texture for o in same_shape], list(TEXTURES))
        answers = [f"@{obj.index} is {obj.texture} ."] + [f"@{obj.index} is {t} ." for t in wrong]
        rationale_changes = [{"texture": t} for t in wrong]
    other_size = _others(rng, obj.size, [], list(SIZES), 1)[0]
    rationales = [_describe(obj)] + [_describe(obj, **change) for change in rationale_changes[:2]]
    rationales.append(_describe(obj, size=other_size))
    answer_order = list(range(4))
    rationale_order = list(range(4))
    rng.shuffle(answer_order)
    rng.shuffle(rationale_order)
    return {"question": q, "answers": [answers[i] for i in answer_order], "answer_label": answer_order.index(0),
            "rationales": [rationales[i] for i in rationale_order], "rationale_label": rationale_order.index(0)}


def metadata(scene: Scene, rng: random.Random) -> dict[str, Any]:
    return {"boxes": [[float(v) for v in obj.box] + [round(rng.uniform(0.8, 1.0), 6)] for obj in scene.objects],
            "segms": [[[[round(x), round(y)] for x, y in obj.polygon]] for obj in scene.objects],
            "names": [obj.shape for obj in scene.objects], "width": scene.width, "height": scene.height}


def write(world: World, root: Path) -> dict[str, int]:
    counts = {"images": 0, "questions": 0}
    annot = 0
    for split, n_images in world.scale.vcr.items():
        records = []
        for i in range(n_images):
            scene = world.scene(f"vcr:{split}:{i}")
            movie_number = 1000 + (i // FRAMES_PER_MOVIE) + (0 if split == "train" else 500)
            movie = f"{movie_number}_Synthetic_shapes_{movie_number}"
            second = 10 * (i % FRAMES_PER_MOVIE)
            stem = f"lsmdc_{movie}/{movie}_00.00.{second:02d}.000-00.00.{second + 4:02d}.500@0"
            rng = row_rng(world.seed, f"vcr:{split}:{i}")
            world.image(scene, root / "vcr1images" / f"{stem}.jpg")
            write_json(root / "vcr1images" / f"{stem}.json", metadata(scene, rng))
            targets = rng.sample(scene.objects, min(world.scale.vcr_questions, len(scene.objects)))
            for number, obj in enumerate(targets, start=1):
                qa = question(scene, obj, rng)
                correct_answer, correct_rationale = qa["answers"][qa["answer_label"]], qa["rationales"][qa["rationale_label"]]
                records.append({
                    "movie": movie, "objects": [o.shape for o in scene.objects], "interesting_scores": [0, 1],
                    "answer_likelihood": "likely", "img_fn": f"{stem}.jpg", "metadata_fn": f"{stem}.json",
                    "answer_orig": original(correct_answer), "question_orig": original(qa["question"]),
                    "rationale_orig": original(correct_rationale), "question": tokens(qa["question"]),
                    "answer_match_iter": [0, 1, 2, 3], "answer_sources": [annot, annot + 1, annot + 2, annot + 3],
                    "answer_choices": [tokens(a) for a in qa["answers"]], "answer_label": qa["answer_label"],
                    "rationale_choices": [tokens(r) for r in qa["rationales"]],
                    "rationale_sources": [annot, annot + 1, annot + 2, annot + 3],
                    "rationale_match_iter": [0, 1, 2, 3], "rationale_label": qa["rationale_label"],
                    "img_id": f"{split}-{i}", "question_number": number, "annot_id": f"{split}-{annot}",
                    "match_fold": f"{split}-{i % 2}", "match_index": annot,
                })
                annot += 1
        write_jsonl(root / "vcr1annots" / f"{split}.jsonl", records)
        counts["images"] += n_images
        counts["questions"] += len(records)
    return counts
