"""Floors of the grounding tasks: boxes chosen without reading the image or the expression.

* :class:`CenterBox`: the box centred in the image covering ``size`` of its width and height (photographers
  centre their subject, so this beats chance);
* :class:`WholeImage`: the whole image (right whenever the object fills at least half of it);
* :class:`RandomBox`: chance — a uniformly random box (both corners of each axis drawn uniformly and sorted),
  seeded by ``(seed, request key)`` so that a run is reproducible.

All answer in ``normalized_xyxy`` (they declare it as their :attr:`coordinates`), three decimals, and answer
grounding requests only (``fields["answer"] == "box"``): a box is not an answer to any other question.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from evaluators.protocol import EvalModel, Request, digest


class BoxFloor(EvalModel):
    """Shared parts: the declared convention, the fingerprint, the refusal of non-grounding requests."""

    coordinates = "normalized_xyxy"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    @cached_property
    def fingerprint(self) -> str:
        return digest(type(self).__name__, self.settings())

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def box(self, request: Request) -> tuple[float, float, float, float]:
        raise NotImplementedError

    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        answers = []
        for request in requests:
            if request.fields.get("answer") != "box":
                raise ValueError(f"{type(self).__name__} answers grounding requests only (request {request.key})")
            answers.append("[" + ", ".join(f"{v:.3f}" for v in self.box(request)) + "]")
        return answers

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        raise ValueError(f"{type(self).__name__} answers grounding requests only, by generation")


class CenterBox(BoxFloor):
    def __init__(self, size: float = 0.5, seed: int = 0):
        super().__init__(seed)
        if not 0 < size <= 1:
            raise ValueError(f"CenterBox size={size} must be in (0, 1] (a fraction of the image's sides)")
        self.size = float(size)

    def settings(self) -> dict[str, Any]:
        return {"size": self.size}

    def box(self, request: Request) -> tuple[float, float, float, float]:
        low, high = (1 - self.size) / 2, (1 + self.size) / 2
        return (low, low, high, high)


class WholeImage(BoxFloor):
    def settings(self) -> dict[str, Any]:
        return {}

    def box(self, request: Request) -> tuple[float, float, float, float]:
        return (0.0, 0.0, 1.0, 1.0)


class RandomBox(BoxFloor):
    def box(self, request: Request) -> tuple[float, float, float, float]:
        rng = random.Random(f"{self.seed}:{request.key}")
        x1, x2 = sorted(rng.random() for _ in range(2))
        y1, y2 = sorted(rng.random() for _ in range(2))
        x1, y1 = min(x1, 0.999), min(y1, 0.999)  # at least 0.001 wide and high, inside the image
        return (x1, y1, max(x2, x1 + 0.001), max(y2, y1 + 0.001))
