"""Text about a scene that is true of its picture: referring expressions, phrases, counts, descriptions.

Referring expressions are *structured* (:class:`Description`) and resolved against the ground truth before
they are written, so an expression is only ever emitted when it picks out exactly one object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from builders.synthetic.scene import Scene, SceneObject, extreme, relation_holds
from builders.synthetic.vocab import ORDINALS, RELATIONS, SHAPE_PLURAL, number_word

ATTRIBUTE_ORDER = ("size", "texture", "colour", "shape")  # English adjective order: "large striped red circle"


@dataclass(frozen=True)
class Description:
    """A noun phrase: attribute values, an optional ordinal word and an optional relation to an anchor."""

    attributes: tuple[tuple[str, str], ...]
    ordinal: str | None = None
    relation: tuple[str, Description] | None = None

    def text(self) -> str:
        values = dict(self.attributes)
        words = ["the"] + ([self.ordinal] if self.ordinal else [])
        words += [values[name] for name in ATTRIBUTE_ORDER[:3] if name in values]
        words.append(values.get("shape", "shape"))
        if self.relation:
            words += [self.relation[0], self.relation[1].text()]
        return " ".join(words)

    def resolve(self, scene: Scene) -> list[SceneObject]:
        """The objects of ``scene`` this phrase describes (a referring expression needs exactly one)."""
        candidates = scene.matching(**dict(self.attributes))
        if self.ordinal:
            winner = extreme(self.ordinal, candidates)
            candidates = [winner] if winner else []
        if self.relation:
            relation, anchor_description = self.relation
            anchors = anchor_description.resolve(scene)
            if len(anchors) != 1:
                return []
            candidates = [c for c in candidates if c is not anchors[0] and relation_holds(relation, c, anchors[0])]
        return candidates


def attributes_of(obj: SceneObject, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((name, obj.attribute(name)) for name in ATTRIBUTE_ORDER if name in names)


# Attribute subsets tried for a referring expression, shortest first.
SHORT_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("shape",), ("colour", "shape"), ("size", "shape"), ("texture", "shape"), ("colour",),
    ("size", "colour", "shape"), ("texture", "colour", "shape"), ("size", "texture", "colour", "shape"),
)
FULL = ("size", "texture", "colour", "shape")


def distinct(descriptions: list[Description]) -> list[Description]:
    """Drop descriptions whose text repeats an earlier one (different anchors can read the same)."""
    seen: set[str] = set()
    kept = []
    for description in descriptions:
        if description.text() not in seen:
            seen.add(description.text())
            kept.append(description)
    return kept


def unique(description: Description, scene: Scene, target: SceneObject) -> bool:
    return description.resolve(scene) == [target]


def minimal_description(scene: Scene, obj: SceneObject) -> Description | None:
    """The shortest attribute-only phrase that is unique for ``obj`` (used for anchors and questions)."""
    for names in SHORT_SUBSETS:
        description = Description(attributes_of(obj, names))
        if unique(description, scene, obj):
            return description
    return None


def appearance_expressions(scene: Scene, obj: SceneObject) -> list[Description]:
    """Unique phrases that use only appearance words (RefCOCO+ forbids location words)."""
    found = [Description(attributes_of(obj, names)) for names in SHORT_SUBSETS]
    return distinct([d for d in found if unique(d, scene, obj)])


def location_expressions(scene: Scene, obj: SceneObject) -> list[Description]:
    """Unique phrases with an ordinal ("the leftmost red circle") or a relation to a unique anchor."""
    found: list[Description] = []
    for names in (("shape",), ("colour", "shape"), ("colour",)):
        for ordinal in ORDINALS:
            found.append(Description(attributes_of(obj, names), ordinal=ordinal))
    for other in scene.objects:
        anchor = minimal_description(scene, other) if other is not obj else None
        if anchor is None:
            continue
        for relation in RELATIONS:
            if relation_holds(relation, obj, other):
                for names in (("shape",), ("colour", "shape")):
                    found.append(Description(attributes_of(obj, names), relation=(relation, anchor)))
    return distinct([d for d in found if unique(d, scene, obj)])


def long_expressions(scene: Scene, obj: SceneObject) -> list[Description]:
    """RefCOCOg-style: every attribute, plus a relation or an ordinal where one makes it unique."""
    found = [d for d in location_expressions(scene, obj) if d.relation or d.ordinal]
    longer = [Description(attributes_of(obj, FULL), ordinal=d.ordinal, relation=d.relation) for d in found]
    longer.append(Description(attributes_of(obj, FULL)))
    return distinct([d for d in longer if unique(d, scene, obj)])


def noun_phrase(obj: SceneObject, names: tuple[str, ...] = FULL, article: str = "a") -> str:
    """``a large striped red circle``; ``names`` picks the attributes (written in English adjective order)."""
    words = [obj.attribute(name) for name in ATTRIBUTE_ORDER[:3] if name in names]
    words.append(obj.shape if "shape" in names else "shape")
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return f"{article} {' '.join(words)}" if article else " ".join(words)


def group_phrase(objects: list[SceneObject], names: tuple[str, ...] = ("colour", "shape")) -> str:
    """``a red circle`` / ``two red circles`` for objects that share the named attributes."""
    if len(objects) == 1:
        return noun_phrase(objects[0], names)
    values = dict(attributes_of(objects[0], names))
    words = [number_word(len(objects))] + [values[n] for n in ATTRIBUTE_ORDER[:3] if n in values]
    words.append(SHAPE_PLURAL[values["shape"]] if "shape" in values else "shapes")
    return " ".join(words)


def region_phrase(obj: SceneObject, scene: Scene, rng: random.Random) -> str:
    """A Visual-Genome-style region description, true of the object and its backdrop (one of six forms)."""
    form = int(rng.random() * 6)  # only the chosen form is built: vg_full writes millions of these
    if form == 0:
        return noun_phrase(obj)
    if form == 1:
        return noun_phrase(obj, ("colour", "shape"))
    if form == 2:
        return f"the {obj.shape} is {obj.colour}"
    if form == 3:
        return f"{noun_phrase(obj, ('size', 'colour', 'shape'))} on a {scene.background.name} background"
    if form == 4:
        return noun_phrase(obj, ("texture", "shape") if obj.texture != "plain" else ("texture", "colour", "shape"))
    if obj.texture != "plain":
        return f"{obj.colour} {obj.shape} with a {obj.texture} pattern"
    return f"{obj.size} {obj.colour} {obj.shape}"


def relation_phrase(a: SceneObject, relation: str, b: SceneObject) -> str:
    return f"{noun_phrase(a, ('colour', 'shape'))} {relation} {noun_phrase(b, ('colour', 'shape'), 'the')}"


def left_to_right(scene: Scene) -> list[SceneObject]:
    return sorted(scene.objects, key=lambda o: (o.centre[0], o.centre[1]))


def scene_description(scene: Scene) -> str:
    """A paragraph listing every object from left to right (LLaVA ``detail`` answers)."""
    objects = left_to_right(scene)
    first = (f"The image shows {number_word(len(objects))} shapes on a {scene.background.name} background. "
             "From left to right: ")
    listed = join_words([noun_phrase(obj) for obj in objects])
    pairs = shared_attribute_pairs(scene)
    tail = ""
    if pairs:
        a, b, name = pairs[0]
        tail = (f"\n\nThe {a.shape} and the {b.shape} share the same {name}, "
                f"{a.attribute(name)}, so the {name} alone does not tell them apart.")
    return first + listed + "." + tail


def join_words(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"


def shared_attribute_pairs(scene: Scene) -> list[tuple[SceneObject, SceneObject, str]]:
    """Pairs of objects with the same colour or the same shape (the distractors of region questions)."""
    pairs = []
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1:]:
            for name in ("colour", "shape"):
                if a.attribute(name) == b.attribute(name):
                    pairs.append((a, b, name))
    return pairs


def count_answer(scene: Scene, **attributes: str) -> str:
    count = len(scene.matching(**attributes))
    return number_word(count).capitalize() + "."
