"""Each reported metric as a function of per-item statistics that add up, so that a bootstrap resample (a
multiset of items) gets the metric the toolkit would compute on it (:mod:`evaluators.metrics.bootstrap`).

* BLEU-n (pycocoevalcap ``Bleu(4)``, ``closest`` reference length): per item the hypothesis length, the closest
  reference length, and the n-gram guesses and clipped matches of orders 1-4; the corpus score is the toolkit's
  formula on their sums (brevity penalty included).
* METEOR 1.5: per item the statistics line its jar writes for ``SCORE``; a resample's score is the jar's
  ``EVAL`` of the summed line (:meth:`evaluators.metrics.meteor.PipelinedMeteor.aggregate`).
* Every other metric (CIDEr, ROUGE-L, accuracy, SS, ...) is the mean of its per-item scores. For CIDEr-D that
  keeps the document frequencies of the full set fixed on every resample (the leaderboard says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .bootstrap import Statistic
from .meteor import PipelinedMeteor, shared_meteor

SCALE = 100.0
BLEU_STATS = "BLEU"  # [hypothesis length, closest reference length, guesses 1-4, matches 1-4] per item
METEOR_STATS = "METEOR"  # the jar's statistics line per item
RECOMPUTED = {"Bleu_1": BLEU_STATS, "Bleu_2": BLEU_STATS, "Bleu_3": BLEU_STATS, "Bleu_4": BLEU_STATS,
              "METEOR": METEOR_STATS}
FIXED_DOCUMENT_FREQUENCIES = ("CIDEr",)  # means of per-item scores whose weights come from the full set
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's bleu_scorer constants


class MeanStatistic:
    """The mean of per-item scores: statistics (score, 1)."""

    def __init__(self, scores: Sequence[float]):
        values = np.asarray(scores, dtype=float)
        self.matrix = np.column_stack([values, np.ones_like(values)])

    def values(self, totals: np.ndarray) -> np.ndarray:
        return totals[:, 0] / totals[:, 1]


class BleuStatistic:
    """Corpus BLEU-``order`` from summed lengths, guesses and matches, as ``BleuScorer.compute_score``."""

    def __init__(self, stats: Sequence[Sequence[float]], order: int):
        if not 1 <= order <= 4:
            raise ValueError(f"BLEU order must be 1..4, got {order}")
        self.matrix = np.asarray(stats, dtype=float).reshape(len(stats), 10)
        self.order = order

    def values(self, totals: np.ndarray) -> np.ndarray:
        testlen, reflen = totals[:, 0], totals[:, 1]
        guess, correct = totals[:, 2:2 + self.order], totals[:, 6:6 + self.order]
        bleu = np.prod((correct + _TINY) / (guess + _SMALL), axis=1) ** (1.0 / self.order)
        ratio = (testlen + _TINY) / (reflen + _SMALL)
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, _TINY)), 1.0)
        return SCALE * bleu * penalty


class MeteorStatistic:
    """Corpus METEOR of summed statistics lines, through the METEOR jar's ``EVAL``.

    A line is ``testLength referenceLength testFunctionWords referenceFunctionWords``, then per matcher stage
    ``test/reference content/function matches``, then ``chunks testWordMatches referenceWordMatches``. The jar
    sums every field into its corpus statistics except one: a segment matched perfectly in one chunk adds no
    chunk (``MeteorStats.addStats``). Each item's chunks are zeroed in that case before summing, so that the sum
    sent back is exactly what ``EVAL`` of the repeated lines would have accumulated.
    """

    def __init__(self, lines: Sequence[str], scorer: PipelinedMeteor | None = None):
        rows = [[float(x) for x in line.split()] for line in lines]
        widths = {len(row) for row in rows}
        if len(widths) > 1 or (widths and (min(widths) < 11 or (min(widths) - 7) % 4)):
            raise ValueError(f"METEOR statistics lines of lengths {sorted(widths)}; expected 7 + 4 per stage")
        self.matrix = np.asarray(rows, dtype=float).reshape(len(rows), widths.pop() if widths else 7)
        chunks = self.matrix.shape[1] - 3
        test_matches = self.matrix[:, 4:chunks:4] + self.matrix[:, 6:chunks:4]
        reference_matches = self.matrix[:, 5:chunks:4] + self.matrix[:, 7:chunks:4]
        perfect = ((test_matches.sum(axis=1) == self.matrix[:, 0]) & (reference_matches.sum(axis=1) == self.matrix[:, 1])
                   & (self.matrix[:, chunks] == 1))
        self.matrix[perfect, chunks] = 0.0
        self.scorer = scorer

    def values(self, totals: np.ndarray) -> np.ndarray:
        if self.scorer is None:
            self.scorer = shared_meteor()
        return SCALE * np.asarray(self.scorer.aggregate(totals.tolist()))


def statistic(metric: str, scores: Sequence[float], stats: Mapping[str, Sequence[Any]], where: str = "") -> Statistic:
    """The statistic of ``metric``: recomputed from ``stats`` for BLEU / METEOR, else the mean of ``scores``.

    ``where`` names the data (a file) in the error raised when a corpus metric's statistics are missing.
    """
    needed = RECOMPUTED.get(metric)
    if needed is None:
        return MeanStatistic(scores)
    if needed not in stats or len(stats[needed]) != len(scores):
        raise ValueError(f"{where or 'result'}: {metric} is a corpus statistic; expected per-item statistics "
                         f"stats.{needed} for all {len(scores)} items (written by `gpt4roi eval` since the "
                         f"recomputing bootstrap; rerun the evaluation)")
    if needed == BLEU_STATS:
        return BleuStatistic(stats[needed], int(metric[-1]))
    return MeteorStatistic(stats[needed])
