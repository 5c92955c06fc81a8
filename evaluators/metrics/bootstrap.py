"""Bootstrap intervals and paired bootstrap tests over per-item scores.

Every task metric is (or is approximated by, see :mod:`evaluators.metrics.captioning`) a mean of per-item
scores, so one resampling of item indices serves every metric. Intervals are percentile intervals of the
resampled mean; the paired test resamples items shared by two models and asks how often the resampled
difference strays from the observed one by at least the observed difference (two-sided, shifted to the null;
Efron & Tibshirani 1993 §16.4, as used for MT by Koehn 2004 and Berg-Kirkpatrick et al. 2012).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(scores: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 level: float = 0.95, center: float | None = None) -> tuple[float, float]:
    """Percentile interval of the mean of ``scores``.

    ``center`` shifts the interval onto a corpus-level statistic that is not the plain mean (corpus BLEU,
    METEOR): the spread comes from the per-item scores, the location from the corpus value.
    """
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return (float("nan"), float("nan"))
    means = values[_indices(values.size, resamples, seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    shift = 0.0 if center is None else center - values.mean()
    return (float(low + shift), float(high + shift))


def paired_bootstrap_pvalue(a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                            seed: int = DEFAULT_SEED) -> float:
    """Two-sided p-value of ``mean(a) != mean(b)`` for scores of two models on the same items (same order).

    ``p = (1 + #{|mean(d*) - mean(d)| >= |mean(d)|}) / (resamples + 1)`` with ``d = a - b``; identical
    systems give 1, a difference far outside the resampling spread gives ``1 / (resamples + 1)``.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores must have one shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        return float("nan")
    diff = x - y
    observed = diff.mean()
    resampled = diff[_indices(diff.size, resamples, seed)].mean(axis=1)
    extreme = np.count_nonzero(np.abs(resampled - observed) >= abs(observed) - 1e-12)
    return float((1 + extreme) / (resamples + 1))
