"""A paired bootstrap of every corpus caption metric for 5,000 captions, against the time of scoring once.

Two models caption the same 5,000 regions of 1,000 images (5 regions per image, like Visual Genome); the
bootstrap draws 1,000 resamples of images and, for each of BLEU-1..4, METEOR, ROUGE-L and CIDEr, recomputes
both models' corpus scores on every resample (:mod:`evaluators.metrics.bootstrap`): a 95% interval for each
model and the paired p-value of the difference. Target: within 3x the time of scoring one model once
(:func:`evaluators.metrics.captioning.score_captions`: PTB tokenizer and every scorer, the METEOR JVM already
started for both).

It also measures, on model A's predictions, the BLEU-4 and METEOR interval widths of the previous method (the
percentile interval of per-item means, resampled by item, moved onto the corpus value and clipped to 0..100)
beside the recomputed interval, by item and by image.

Run: ``.venv/bin/python -m benchmarks bootstrap``; writes ``benchmarks/results/bootstrap.json`` (wall and CPU
seconds: the machine may be shared).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._measure import machine_with_load, write_result
from benchmarks.caption_metrics import COLOURS, N_CAPTIONS, cpu_seconds, region_captions
from evaluators.metrics import captioning
from evaluators.metrics.bootstrap import (
    corpus_value,
    percentile_interval,
    resampled,
    resampling,
    shifted_pvalue,
)
from evaluators.metrics.corpus import statistic

RESAMPLES = 1000
REGIONS_PER_IMAGE = 5
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
TARGET_RATIO = 3.0


def second_model(predictions: list[str], seed: int = 1) -> list[str]:
    """Model B: model A's captions with a third of the colour words swapped (a close competitor)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(COLOURS) if word in COLOURS and rng.random() < 0.33 else word
                     for word in text.split()) for text in predictions]


def paired_bootstrap(a: captioning.CaptionScores, b: captioning.CaptionScores, images: list[str]) -> dict:
    """Intervals of both models and the paired p-value for every metric, 1,000 joint resamples of images."""
    draws = resampling(len(images), images, resamples=RESAMPLES, seed=0)
    out = {}
    for metric in METRICS:
        stat_a = statistic(metric, a.per_item[metric], a.stats)
        stat_b = statistic(metric, b.per_item[metric], b.stats)
        values_a, values_b = resampled(stat_a, draws), resampled(stat_b, draws)
        observed = corpus_value(stat_a) - corpus_value(stat_b)
        out[metric] = {"a": round(corpus_value(stat_a), 3), "b": round(corpus_value(stat_b), 3),
                       "ci95_a": [round(v, 3) for v in percentile_interval(values_a)],
                       "ci95_b": [round(v, 3) for v in percentile_interval(values_b)],
                       "p_value": shifted_pvalue(observed, values_a - values_b)}
    return out


def previous_interval(scores: list[float], corpus: float) -> tuple[float, float]:
    """The method this replaces: item-mean percentile interval (items resampled independently), shifted onto the
    corpus value, clipped to 0..100."""
    values = np.asarray(scores, dtype=float)
    indices = np.random.default_rng(0).integers(0, values.size, size=(RESAMPLES, values.size))
    low, high = np.quantile(values[indices].mean(axis=1), [0.025, 0.975])
    shift = corpus - values.mean()
    return (min(max(low + shift, 0.0), 100.0), min(max(high + shift, 0.0), 100.0))


def widths(a: captioning.CaptionScores, images: list[str]) -> dict:
    """BLEU-4 and METEOR interval widths of model A: previous method, recomputed by item, recomputed by image."""
    by_item = resampling(len(images), None, resamples=RESAMPLES, seed=0)
    by_image = resampling(len(images), images, resamples=RESAMPLES, seed=0)
    out = {}
    for metric in ("Bleu_4", "METEOR"):
        stat = statistic(metric, a.per_item[metric], a.stats)
        intervals = {"previous_item_spread_moved": previous_interval(a.per_item[metric], a.corpus[metric]),
                     "recomputed_by_item": percentile_interval(resampled(stat, by_item)),
                     "recomputed_by_image": percentile_interval(resampled(stat, by_image))}
        out[metric] = {name: {"interval": [round(v, 3) for v in ci], "width": round(ci[1] - ci[0], 3)}
                       for name, ci in intervals.items()}
    return out


def meteor_cpu_seconds() -> float:
    """CPU time of the running METEOR JVM (``cpu_seconds`` counts children only once reaped)."""
    fields = (Path("/proc") / str(captioning.shared_meteor().process.pid) / "stat").read_text().rsplit(")", 1)[1]
    user, system = fields.split()[11:13]
    return (int(user) + int(system)) / os.sysconf("SC_CLK_TCK")


def timed(fn, *args, **kwargs):
    """``fn``'s value, wall seconds, and CPU seconds of this process, its reaped children and the METEOR JVM."""
    wall, cpu = time.perf_counter(), cpu_seconds() + meteor_cpu_seconds()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - wall, cpu_seconds() + meteor_cpu_seconds() - cpu


def run() -> dict:
    predictions, references = region_captions(N_CAPTIONS)
    other = second_model(predictions)
    images = [f"image{index // REGIONS_PER_IMAGE}" for index in range(N_CAPTIONS)]
    captioning.shared_meteor()  # both timings with a running METEOR JVM
    load_before = os.getloadavg()[0]
    scores_a, score_s, score_cpu = timed(captioning.score_captions, predictions, references, spice=False)
    scores_b = captioning.score_captions(other, references, spice=False)
    tests, boot_s, boot_cpu = timed(paired_bootstrap, scores_a, scores_b, images)
    result = {
        "captions": N_CAPTIONS, "images": N_CAPTIONS // REGIONS_PER_IMAGE, "resamples": RESAMPLES,
        "metrics": list(METRICS), "score_once_s": round(score_s, 2), "score_once_cpu_s": round(score_cpu, 2),
        "paired_bootstrap_s": round(boot_s, 2), "paired_bootstrap_cpu_s": round(boot_cpu, 2),
        "ratio": round(boot_s / score_s, 3), "cpu_ratio": round(boot_cpu / score_cpu, 3),
        "target_ratio": TARGET_RATIO, "meets_target": boot_s / score_s <= TARGET_RATIO,
        "paired": tests, "interval_widths_model_a": widths(scores_a, images),
        "machine": machine_with_load(load_before),
    }
    write_result("bootstrap", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks bootstrap`` (the suite's benchmark runner calls ``main(argv)``)."""
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
