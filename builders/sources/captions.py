"""Region-caption conversations, shared by the RefCOCO family and Visual Genome builders.

A caption row asks about regions one at a time: human turn K holds a drawn template with ``<regionK>`` (the
first one opened by ``<image>``), the assistant answers with that region's text. RefCOCO rows and every
evaluation row hold one region; Visual Genome training rows hold up to 15.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from builders.placeholders import IMAGE_TOKEN, region_token
from builders.sources.base import turn


def caption_turns(answers: Sequence[str], templates: Sequence[str], rng: random.Random) -> list[dict[str, str]]:
    """One human/gpt pair per answer; turn K asks about ``<regionK>`` with a template drawn from ``rng``."""
    turns: list[dict[str, str]] = []
    draw, count = rng.random, len(templates)
    for k, answer in enumerate(answers, start=1):
        # index arithmetic on random() is a few times cheaper than rng.choice, which matters at 5.4 M turns
        question = templates[int(draw() * count)].format(region=region_token(k))
        if k == 1:
            question = f"{IMAGE_TOKEN}\n{question}"
        turns.append(turn("human", question))
        turns.append(turn("gpt", answer))
    return turns


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
