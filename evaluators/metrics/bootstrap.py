"""Bootstrap intervals and paired tests that recompute each metric on every resample, clustered by image;
exact McNemar tests for accuracies; Holm's correction across the pairs of a leaderboard.

Why recompute: corpus BLEU and METEOR are not means of per-item scores, so an interval of the item mean moved
onto the corpus value has the wrong width (for BLEU-4 about half the recomputed width, for METEOR about twice),
and a test of item means can disagree in sign with the corpus scores the table shows. Here every metric is a
function of per-item statistics that add up (:mod:`evaluators.metrics.corpus`): a mean is (score, 1), BLEU the
hypothesis length, closest reference length, n-gram guesses and matches, METEOR the statistics line its jar
writes per segment. A resample draws images (clusters) with replacement; its totals are
``counts @ cluster_totals`` (one matrix product for all resamples) and the metric is recomputed from each row of
totals, exactly as the toolkit computes it for that multiset of items (tested against a brute-force bootstrap).

Why clusters: VG, COCO/LVIS and RefCOCO have many regions per image; their errors are correlated, and
resampling items as if independent makes intervals too narrow (Field & Welsh 2007, cluster bootstrap).

Intervals are percentile intervals. The paired test resamples images jointly for two models and asks how often
the recomputed difference strays from the observed one by at least the observed difference (two-sided,
shifted to the null; Efron & Tibshirani 1993 §16.4; Koehn 2004 recomputes corpus BLEU the same way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95


class Statistic(Protocol):
    """A metric as a function of summed per-item statistics."""

    matrix: np.ndarray  # items x statistics

    def values(self, totals: np.ndarray) -> np.ndarray:
        """The metric (x100) for each row of summed statistics."""


def corpus_value(statistic: Statistic) -> float:
    """The metric on every item once (the corpus value the table shows)."""
    return float(statistic.values(statistic.matrix.sum(axis=0, keepdims=True))[0])


@dataclass(frozen=True)
class Resampling:
    """Which cluster each item belongs to and how often each resample draws each cluster."""

    cluster_of: np.ndarray  # item -> cluster index
    counts: np.ndarray  # resamples x clusters

    @property
    def n_items(self) -> int:
        return int(self.cluster_of.size)

    @property
    def n_clusters(self) -> int:
        return int(self.counts.shape[1])

    def totals(self, matrix: np.ndarray) -> np.ndarray:
        """Summed statistics of every resample (resamples x statistics)."""
        if matrix.shape[0] != self.n_items:
            raise ValueError(f"{matrix.shape[0]} items of statistics for a resampling of {self.n_items} items")
        per_cluster = np.zeros((self.n_clusters, matrix.shape[1]))
        np.add.at(per_cluster, self.cluster_of, matrix)
        return self.counts @ per_cluster


def resampling(n_items: int, clusters: Sequence[str] | None = None, *, resamples: int = DEFAULT_RESAMPLES,
               seed: int = DEFAULT_SEED) -> Resampling:
    """Resamples of ``n_items`` items drawn by cluster (``clusters[i]``: the image of item ``i``; ``None``:
    every item its own cluster). The same seed and clusters give the same resamples, so two models scored on
    the same items are resampled jointly."""
    if clusters is None:
        cluster_of = np.arange(n_items)
    else:
        if len(clusters) != n_items:
            raise ValueError(f"{len(clusters)} cluster labels for {n_items} items")
        _, cluster_of = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    k = int(cluster_of.max()) + 1 if n_items else 0
    draws = np.random.default_rng(seed).integers(0, max(k, 1), size=(resamples, k))
    flat = (draws + k * np.arange(resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=resamples * k).reshape(resamples, k).astype(float)
    return Resampling(cluster_of.ravel(), counts)


def resampled(statistic: Statistic, draws: Resampling) -> np.ndarray:
    """The metric recomputed on every resample (one value per resample)."""
    return statistic.values(draws.totals(statistic.matrix))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def shifted_pvalue(observed: float, differences: np.ndarray) -> float:
    """``p = (1 + #{|d* - d| >= |d|}) / (resamples + 1)`` for the observed difference ``d`` and resampled ``d*``:
    identical systems give 1, a difference far outside the resampling spread ``1 / (resamples + 1)``."""
    extreme = np.count_nonzero(np.abs(differences - observed) >= abs(observed) - 1e-9)
    return float((1 + extreme) / (differences.size + 1))


def interval(statistic: Statistic, draws: Resampling, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the metric recomputed on every resample."""
    if draws.n_items == 0:
        return (float("nan"), float("nan"))
    return percentile_interval(resampled(statistic, draws), level)


def paired_pvalue(a: Statistic, b: Statistic, draws: Resampling) -> float:
    """Two-sided p-value of ``metric(A) != metric(B)`` on the same items (same order), the metric recomputed for
    both models on each joint resample (:func:`shifted_pvalue`)."""
    if a.matrix.shape[0] != b.matrix.shape[0]:
        raise ValueError(f"paired statistics need the same items, got {a.matrix.shape[0]} and {b.matrix.shape[0]}")
    if draws.n_items == 0:
        return float("nan")
    return shifted_pvalue(corpus_value(a) - corpus_value(b), resampled(a, draws) - resampled(b, draws))


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value: of the items exactly one model gets right, is the split 50/50?

    ``p = min(1, 2 * P[X <= min(n01, n10)])`` with ``X ~ Binomial(n01 + n10, 1/2)``; no discordant item gives 1.
    """
    if len(a_right) != len(b_right):
        raise ValueError(f"McNemar needs paired items, got {len(a_right)} and {len(b_right)}")
    only_a = sum(1 for x, y in zip(a_right, b_right, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a_right, b_right, strict=True) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2.0 * tail / 2 ** n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the given tests), in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted
