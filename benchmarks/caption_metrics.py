"""Scoring 5,000 region captions with BLEU-1..4, METEOR, ROUGE-L and CIDEr, JVM starts included.

* ours: :func:`evaluators.metrics.captioning.score_captions` — the PTB tokenizer once for predictions and
  references together, one METEOR JVM, the toolkit's scorers on the tokens;
* the lmms-eval way (its ``refcoco`` / ``coco_cap`` task utilities, as of 2024): every reported metric
  (Bleu_1, ..., Bleu_4, METEOR, ROUGE_L, CIDEr) is aggregated separately, and each aggregation builds a new
  PTBTokenizer, tokenises references and predictions (two JVM starts), and builds a new scorer (METEOR: a
  new JVM). Re-implemented here from that description.

Both must give the same numbers (checked). Target: ours under 60 s on the development machine (2 shared CPU
cores). Run: ``.venv/bin/python -m benchmarks caption_metrics`` (or ``make bench``); writes
``benchmarks/results/caption_metrics.json`` (wall and CPU seconds: the machine is shared).
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from benchmarks._measure import machine_with_load, write_result
from evaluators.metrics import captioning

N_CAPTIONS = 5000
N_REFERENCES = 3
TARGET_S = 60.0

COLOURS = ["red", "white", "black", "blue", "green", "brown", "grey", "yellow", "dark", "striped"]
THINGS = ["man", "woman", "dog", "car", "bus", "chair", "table", "umbrella", "horse", "boat", "shirt", "sign",
          "window", "tree", "plate", "bag", "bicycle", "cat", "clock", "train"]
PLACES = ["on the left", "on the right", "in the back", "near the table", "by the window", "on the road",
          "under the tree", "in front", "behind the fence", "next to the car"]


def region_captions(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Referring-expression-like predictions and references (a prediction shares some words with them)."""
    rng = random.Random(seed)

    def phrase(thing: str) -> str:
        return f"{rng.choice(['a', 'the'])} {rng.choice(COLOURS)} {thing} {rng.choice(PLACES)}"

    predictions, references = [], []
    for _ in range(n):
        thing = rng.choice(THINGS)
        references.append([phrase(thing).capitalize() + "." for _ in range(N_REFERENCES)])
        predictions.append(phrase(thing if rng.random() < 0.8 else rng.choice(THINGS)))
    return predictions, references


def ours(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    captioning.shared_meteor.cache_clear()  # count the METEOR JVM start
    scores = captioning.score_captions(predictions, references, spice=False).corpus
    captioning.shared_meteor().close()  # count the JVM's CPU time too (children are counted once reaped)
    captioning.shared_meteor.cache_clear()
    return scores


def lmms_eval_way(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    gts_raw = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res_raw = {i: [{"caption": p}] for i, p in enumerate(predictions)}
    scores = {}
    for metric in ("Bleu_4", "Bleu_3", "Bleu_2", "Bleu_1", "METEOR", "ROUGE_L", "CIDEr"):
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts_raw), tokenizer.tokenize(res_raw)
        if metric.startswith("Bleu"):
            value = Bleu(4).compute_score(gts, res, verbose=0)[0][int(metric[-1]) - 1]
        else:
            scorer = {"METEOR": Meteor, "ROUGE_L": Rouge, "CIDEr": Cider}[metric]()
            value = scorer.compute_score(gts, res)[0]
            del scorer
        scores[metric] = 100 * float(value)
    return scores


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the JVMs): less sensitive than wall time to the
    other jobs sharing the machine's cores."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, *args):
    wall, cpu = time.perf_counter(), cpu_seconds()
    value = fn(*args)
    return value, time.perf_counter() - wall, cpu_seconds() - cpu


def run() -> dict:
    """Measure both ways, check they agree, write ``benchmarks/results/caption_metrics.json``."""
    predictions, references = region_captions(N_CAPTIONS)
    load_before = os.getloadavg()[0]
    our_scores, our_s, our_cpu = timed(ours, predictions, references)
    their_scores, their_s, their_cpu = timed(lmms_eval_way, predictions, references)
    for name, value in their_scores.items():
        if abs(value - our_scores[name]) > 1e-6:
            raise AssertionError(f"{name}: ours {our_scores[name]} != lmms-eval way {value}")
    result = {
        "captions": N_CAPTIONS, "references_per_caption": N_REFERENCES,
        "ours_s": round(our_s, 2), "lmms_eval_way_s": round(their_s, 2), "speedup": round(their_s / our_s, 2),
        "ours_cpu_s": round(our_cpu, 2), "lmms_eval_way_cpu_s": round(their_cpu, 2),
        "cpu_ratio": round(their_cpu / our_cpu, 2), "target_s": TARGET_S, "meets_target": our_s < TARGET_S,
        "scores": {k: round(v, 3) for k, v in our_scores.items()},
        "machine": machine_with_load(load_before),
    }
    write_result("caption_metrics", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks caption_metrics`` (the suite's benchmark runner calls ``main(argv)``)."""
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
