"""Region-captioning scores through ``pycocoevalcap``, tokenising once per task.

``pycocoevalcap.eval.COCOEvalCap`` starts the Stanford PTB tokenizer (a JVM) for the references and again
for the predictions, and lmms-eval re-tokenises for every metric. Here predictions and references go through
one tokenizer call, then the toolkit's own Bleu / Rouge / Cider scorers and its METEOR jar (driven by a
pipelined client, :mod:`evaluators.metrics.meteor`, one JVM per process) run on the result, so the scores
equal COCOEvalCap's (tests/test_eval_metrics.py checks it) at a fraction of the JVM starts and pipe waits.

SPICE needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use; without network they are
usually absent, and then SPICE is reported as unavailable with the reason — never as a score of 0.

Scores are on the papers' scale (x100). CIDEr and ROUGE-L are means of per-item scores; BLEU and METEOR are
corpus statistics, so the per-item statistics behind them are returned too (``CaptionScores.stats``): the
bootstrap recomputes the corpus scores from them on every resample (:mod:`evaluators.metrics.corpus`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from .corpus import BLEU_STATS, METEOR_STATS
from .meteor import shared_meteor

BLEU = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
CAPTION_METRICS = (*BLEU, "METEOR", "ROUGE_L", "CIDEr")
CORPUS_LEVEL = (*BLEU, "METEOR")  # corpus value is not the mean of the per-item scores
SPICE_JARS = ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar", "lib/stanford-corenlp-3.6.0-models.jar")
SCALE = 100.0


@dataclass
class CaptionScores:
    """Corpus scores and per-item scores (same order as the input), both x100, unavailable metrics, and the
    per-item statistics of the corpus metrics (``BLEU``: 10 numbers, ``METEOR``: the jar's line)."""

    corpus: dict[str, float]
    per_item: dict[str, list[float]]
    unavailable: dict[str, str] = field(default_factory=dict)
    stats: dict[str, list] = field(default_factory=dict)


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here (missing jars or Java), or ``None`` when it can."""
    import shutil

    import pycocoevalcap.spice as spice_package

    folder = Path(spice_package.__file__).parent
    missing = [name for name in SPICE_JARS if not (folder / name).is_file()]
    if missing:
        return f"Stanford CoreNLP jars for SPICE not found in {folder}: {', '.join(missing)}"
    if shutil.which("java") is None:
        return "java is not on PATH"
    return None


def spice_skip_reason(spice: bool | None) -> str | None:
    """Why SPICE is not computed (``spice=False``: disabled; ``None``: only when it can run), or ``None``."""
    if spice is False:
        return "disabled in the task config"
    return spice_unavailable_reason()


def tokenize_once(predictions: Sequence[str], references: Sequence[Sequence[str]]
                  ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """PTB-tokenise predictions and references in one JVM call; keys are item positions."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    joint: dict[tuple[str, int], list[dict[str, str]]] = {}
    for index, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
        if not refs:
            raise ValueError(f"item {index} has no reference caption")
        joint[("ref", index)] = [{"caption": text} for text in refs]
        joint[("pred", index)] = [{"caption": prediction}]
    tokens = PTBTokenizer().tokenize(joint)
    gts = {index: tokens[("ref", index)] for index in range(len(predictions))}
    res = {index: tokens[("pred", index)] for index in range(len(predictions))}
    return gts, res


def bleu_with_statistics(gts: dict[int, list[str]], res: dict[int, list[str]]
                         ) -> tuple[list[float], list[list[float]], list[list[float]]]:
    """``Bleu(4).compute_score`` (same scorer, same ``closest`` option) plus each item's statistics:
    hypothesis length, closest reference length, guesses and matches of orders 1-4."""
    scorer = BleuScorer(n=4)
    for key in gts:
        scorer += (res[key][0], gts[key])
    corpus, per_item = scorer.compute_score(option="closest", verbose=0)
    stats = [[comps["testlen"], scorer._single_reflen(comps["reflen"], "closest", comps["testlen"]),
              *comps["guess"], *comps["correct"]] for comps in scorer.ctest]
    return corpus, per_item, stats


def score_tokenized(gts: dict[int, list[str]], res: dict[int, list[str]], *, spice: bool | None = None
                    ) -> CaptionScores:
    """Run the toolkit's scorers on tokenised captions. ``spice=None`` runs SPICE when it can."""
    corpus: dict[str, float] = {}
    per_item: dict[str, list[float]] = {}
    if gts.keys() != res.keys():
        raise ValueError("references and predictions need the same item keys")
    bleu, bleu_items, bleu_stats = bleu_with_statistics(gts, res)
    for name, value, items in zip(BLEU, bleu, bleu_items, strict=True):
        corpus[name], per_item[name] = value, list(items)
    meteor, meteor_items, meteor_stats = shared_meteor().score_with_statistics(gts, res)
    corpus["METEOR"], per_item["METEOR"] = meteor, meteor_items
    for name, scorer in (("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        value, items = scorer.compute_score(gts, res)
        corpus[name], per_item[name] = float(value), [float(v) for v in items]
    unavailable: dict[str, str] = {}
    reason = spice_skip_reason(spice)
    if reason is not None:
        unavailable["SPICE"] = reason
    else:
        from pycocoevalcap.spice.spice import Spice

        value, items = Spice().compute_score(gts, res)
        corpus["SPICE"], per_item["SPICE"] = float(value), [float(item["All"]["f"]) for item in items]
    return CaptionScores(
        corpus={name: value * SCALE for name, value in corpus.items()},
        per_item={name: [v * SCALE for v in values] for name, values in per_item.items()},
        unavailable=unavailable,
        stats={BLEU_STATS: bleu_stats, METEOR_STATS: meteor_stats},
    )


def score_captions(predictions: Sequence[str], references: Sequence[Sequence[str]], *, spice: bool | None = None
                   ) -> CaptionScores:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when available) of ``predictions`` against ``references``."""
    gts, res = tokenize_once(predictions, references)
    return score_tokenized(gts, res, spice=spice)
