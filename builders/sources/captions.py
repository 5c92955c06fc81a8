"""Region-caption conversations, shared by the RefCOCO family and Visual Genome builders.

A caption row asks about regions one at a time: human turn K holds a drawn template with ``<regionK>`` (the
first one opened by ``<image>``), the assistant answers with that region's text. RefCOCO rows and every
evaluation row hold one region; Visual Genome training rows hold up to 15.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from builders.placeholders import IMAGE_TOKEN, region_token


def caption_turns(answers: Sequence[str], templates: Sequence[str], rng: random.Random) -> list[dict[str, str]]:
    """One human/gpt pair per answer; turn K asks about ``<regionK>`` with a template drawn from ``rng``."""
    turns: list[dict[str, str]] = []
    draw, count = rng.random, len(templates)
    # index arithmetic on random() is a few times cheaper than rng.choice, and the questions are formatted
    # once per (templates, K): both matter at 5.4 M turns. Dict literals spare a call per turn.
    # the question table may run longer than this row's answers
    for questions, answer in zip(_questions(templates, len(answers)), answers, strict=False):
        turns += ({"from": "human", "value": questions[int(draw() * count)]}, {"from": "gpt", "value": answer})
    return turns


_QUESTIONS: dict[int, tuple[Sequence[str], list[tuple[str, ...]]]] = {}


def _questions(templates: Sequence[str], n_regions: int) -> list[tuple[str, ...]]:
    """Entry K-1: every template filled in for ``<regionK>`` (opened by ``<image>`` when K = 1), for K up to
    at least ``n_regions``; cached per template list, and grown when a row asks about more regions."""
    cached = _QUESTIONS.get(id(templates))
    if cached is None or cached[0] is not templates:  # the identity check guards against a reused id()
        cached = _QUESTIONS[id(templates)] = (templates, [])
    table = cached[1]
    for k in range(len(table) + 1, n_regions + 1):
        questions = tuple(template.format(region=region_token(k)) for template in templates)
        table.append(tuple(f"{IMAGE_TOKEN}\n{question}" for question in questions) if k == 1 else questions)
    return table


def balanced_chunks(count: int, max_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` slices covering ``range(count)`` in the fewest chunks of at most ``max_size``.

    Sizes differ by at most one (262 regions, 15 per row -> 18 rows of 14-15 turns rather than 17 full rows
    and one of 7), so no training row is a short leftover.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    n_chunks = -(-count // max_size)
    bounds = []
    start = 0
    for index in range(n_chunks):
        size = count // n_chunks + (1 if index < count % n_chunks else 0)
        bounds.append((start, start + size))
        start += size
    return bounds
