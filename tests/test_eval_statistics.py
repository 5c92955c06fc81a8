"""Bootstrap intervals and paired tests that recompute the metric (BLEU, METEOR from their statistics; means),
clustered by image; exact McNemar; Holm. Known answers, a brute-force bootstrap through the toolkit itself,
and calibration under the null."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from scipy.stats import binomtest

from evaluators.metrics import captioning
from evaluators.metrics.bootstrap import (
    corpus_value,
    holm,
    interval,
    mcnemar_exact,
    paired_pvalue,
    resampling,
)
from evaluators.metrics.corpus import BleuStatistic, MeanStatistic, MeteorStatistic, statistic

PREDICTIONS = ["a red dog on the left", "the man in the back", "a white car", "two people near the table",
               "a green umbrella", "the black cat", "a blue bus on the road", "the striped shirt", "a tree",
               "the dark window by the door", "a horse", "the plate with food on it"]
REFERENCES = [["the red dog on the left side", "a brown dog"], ["a man standing in the back"], ["the white car"],
              ["people next to the table", "two persons by a table"], ["an umbrella that is green"],
              ["black cat on the sofa"], ["the blue bus"], ["a man in a striped shirt"], ["the tall tree"],
              ["a dark window"], ["a brown horse running"], ["a plate of food"]]
IMAGES = ["1", "1", "1", "2", "2", "3", "4", "4", "4", "4", "5", "6"]


@pytest.fixture(scope="module")
def scored():
    gts, res = captioning.tokenize_once(PREDICTIONS, REFERENCES)
    return gts, res, captioning.score_tokenized(gts, res, spice=False)


def test_statistics_give_back_the_toolkit_corpus_scores(scored):
    _, _, scores = scored
    for metric in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr", "ROUGE_L"):
        value = corpus_value(statistic(metric, scores.per_item[metric], scores.stats))
        assert value == pytest.approx(scores.corpus[metric], rel=1e-12), metric
    with pytest.raises(ValueError, match="stats.METEOR for all 12 items"):
        statistic("METEOR", scores.per_item["METEOR"], {}, where="x.jsonl")


def test_recomputed_resamples_equal_a_brute_force_bootstrap(scored):
    """Every resample's BLEU-4 and METEOR equal the toolkit's scores of that multiset of items (duplicates
    included), and the interval is the percentile interval of those brute-force scores."""
    gts, res, scores = scored
    draws = resampling(len(PREDICTIONS), IMAGES, resamples=12, seed=5)
    bleu = statistic("Bleu_4", scores.per_item["Bleu_4"], scores.stats)
    meteor = statistic("METEOR", scores.per_item["METEOR"], scores.stats)
    fast_bleu, fast_meteor = bleu.values(draws.totals(bleu.matrix)), meteor.values(draws.totals(meteor.matrix))
    brute_bleu, brute_meteor = [], []
    for counts in draws.counts:
        chosen = [i for i in range(len(PREDICTIONS)) for _ in range(int(counts[draws.cluster_of[i]]))]
        g = {k: gts[i] for k, i in enumerate(chosen)}
        r = {k: res[i] for k, i in enumerate(chosen)}
        brute_bleu.append(100 * Bleu(4).compute_score(g, r, verbose=0)[0][3])
        brute_meteor.append(100 * captioning.shared_meteor().compute_score(g, r)[0])
    assert fast_bleu == pytest.approx(brute_bleu, rel=1e-9, abs=1e-9)
    assert fast_meteor == pytest.approx(brute_meteor, rel=1e-9, abs=1e-9)
    assert interval(meteor, draws) == pytest.approx(tuple(np.quantile(brute_meteor, [0.025, 0.975])))
    # items of one image are always drawn together
    assert all(len({c[draws.cluster_of[i]] for i in range(4) if IMAGES[i] == "1"}) == 1 for c in draws.counts)


def test_meteor_sum_drops_the_chunk_of_a_perfect_segment():
    """The jar adds no chunk for a segment matched perfectly in one chunk; the summed line must do the same."""
    gts = {0: ["a white car"], 1: ["a brown dog near the door"], 2: ["the man"]}
    res = {0: ["a white car"], 1: ["the dog"], 2: ["the man"]}
    corpus, _, lines = captioning.shared_meteor().score_with_statistics(gts, res)
    meteor = MeteorStatistic(lines)
    assert meteor.matrix[:, 20].tolist() == [0.0, 2.0, 0.0]  # chunks: perfect segments add none
    assert corpus_value(meteor) == pytest.approx(100 * corpus, rel=1e-12)
    with pytest.raises(ValueError, match="expected 7 \\+ 4 per stage"):
        MeteorStatistic(["1.0 2.0 3.0"])


def test_clustered_resampling_of_identical_items_is_the_resampling_of_images():
    """Five identical items per image carry the information of one: the clustered interval equals the interval
    of one item per image (same draws), and is wider than treating the 5k items as independent."""
    rng = np.random.default_rng(3)
    per_image = (rng.random(60) < 0.4) * 100.0
    items, images = np.repeat(per_image, 5), [f"{i:02d}" for i in np.repeat(np.arange(60), 5)]
    clustered = interval(MeanStatistic(items), resampling(300, images, resamples=500, seed=2))
    assert clustered == interval(MeanStatistic(per_image), resampling(60, resamples=500, seed=2))
    naive = interval(MeanStatistic(items), resampling(300, resamples=500, seed=2))
    ratio = (clustered[1] - clustered[0]) / (naive[1] - naive[0])
    assert ratio == pytest.approx(math.sqrt(5), rel=0.2)
    assert interval(MeanStatistic([50.0] * 30), resampling(30)) == (50.0, 50.0)
    assert all(math.isnan(v) for v in interval(MeanStatistic([]), resampling(0)))
    with pytest.raises(ValueError, match="3 cluster labels for 4 items"):
        resampling(4, ["a", "b", "c"])


def test_bleu_interval_is_recomputed_not_moved_from_item_scores():
    """A corpus whose matches sit in a few long items: the corpus BLEU-1 is a ratio of sums, and its interval
    (known here: every resample's value is checked against the formula) differs from item means."""
    stats = [[10, 10, 10, 9, 8, 7, 10, 9, 8, 7]] * 3 + [[2, 4, 2, 1, 0, 0, 0, 0, 0, 0]] * 7
    bleu1 = BleuStatistic(stats, 1)
    assert corpus_value(bleu1) == pytest.approx(100 * 30 / 44 * math.exp(1 - 58 / 44), rel=1e-9)
    draws = resampling(10, resamples=200, seed=1)
    totals = draws.totals(bleu1.matrix)
    expected = 100 * totals[:, 6] / totals[:, 2] * np.where(totals[:, 0] < totals[:, 1],
                                                             np.exp(1 - totals[:, 1] / totals[:, 0]), 1.0)
    assert bleu1.values(totals) == pytest.approx(expected, rel=1e-9)


def test_paired_pvalues_on_known_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(50, 10, size=200)
    draws = resampling(200, resamples=999, seed=0)
    assert paired_pvalue(MeanStatistic(a), MeanStatistic(a), draws) == 1.0
    # a constant improvement has no resampling spread at all: the smallest p the test can give
    assert paired_pvalue(MeanStatistic(a + 1), MeanStatistic(a), draws) == pytest.approx(1 / 1000)
    assert paired_pvalue(MeanStatistic(a + rng.normal(5, 3, 200)), MeanStatistic(a), draws) < 0.01
    assert paired_pvalue(MeanStatistic(a + rng.normal(0.05, 10, 200)), MeanStatistic(a), draws) > 0.2
    with pytest.raises(ValueError, match="same items"):
        paired_pvalue(MeanStatistic([1, 2]), MeanStatistic([1]), resampling(2))


def test_paired_test_follows_the_corpus_difference_not_the_item_means():
    """A wins on item-mean BLEU-1 (many short perfect answers) but loses on corpus BLEU-1 (B matches the long
    items); the test's observed difference is the corpus one, and it is significant in B's favour."""
    short_perfect, long_miss = [3, 3, 3, 2, 1, 0, 3, 2, 1, 0], [20, 20, 20, 19, 18, 17, 2, 1, 0, 0]
    short_half, long_hit = [3, 3, 3, 2, 1, 0, 1, 0, 0, 0], [20, 20, 20, 19, 18, 17, 20, 19, 18, 17]
    a = BleuStatistic([short_perfect] * 400 + [long_miss] * 100, 1)
    b = BleuStatistic([short_half] * 400 + [long_hit] * 100, 1)
    item_mean_a = np.mean([1.0] * 40 + [0.1] * 10)
    item_mean_b = np.mean([1 / 3] * 40 + [1.0] * 10)
    assert item_mean_a > item_mean_b and corpus_value(a) < corpus_value(b)
    assert paired_pvalue(a, b, resampling(500, resamples=500, seed=0)) < 0.01


def test_mcnemar_exact_on_known_cases():
    a = [True] * 5 + [False] * 0 + [True] * 20
    b = [False] * 5 + [True] * 20
    assert mcnemar_exact(a, b) == pytest.approx(2 / 2 ** 5)  # 5 discordant, all one way
    a = [True] * 3 + [False] * 10 + [True] * 7
    b = [False] * 3 + [True] * 10 + [True] * 7
    assert mcnemar_exact(a, b) == pytest.approx(2 * (1 + 13 + 78 + 286) / 2 ** 13)
    assert mcnemar_exact(a, b) == pytest.approx(binomtest(3, 13, 0.5).pvalue)
    assert mcnemar_exact([True, False], [True, False]) == 1.0
    assert mcnemar_exact([True] * 4 + [False] * 4, [False] * 4 + [True] * 4) == 1.0
    with pytest.raises(ValueError, match="paired items"):
        mcnemar_exact([True], [True, False])


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_clustered_paired_test_is_calibrated_under_the_null():
    """Two equally good models whose errors are shared within an image: the clustered test rejects at 5% in
    about 5% of experiments; resampling items as if independent rejects far more often."""
    experiments, images, per_image = 300, 60, 4
    clusters = [str(i) for i in np.repeat(np.arange(images), per_image)]
    clustered_draws = resampling(images * per_image, clusters, resamples=300, seed=1)
    naive_draws = resampling(images * per_image, resamples=300, seed=1)
    clustered = naive = 0
    for seed in range(experiments):
        rng = np.random.default_rng(1000 + seed)
        a = np.repeat(rng.normal(0, 10, images), per_image) + rng.normal(0, 3, images * per_image)
        b = np.repeat(rng.normal(0, 10, images), per_image) + rng.normal(0, 3, images * per_image)
        clustered += paired_pvalue(MeanStatistic(a), MeanStatistic(b), clustered_draws) < 0.05
        naive += paired_pvalue(MeanStatistic(a), MeanStatistic(b), naive_draws) < 0.05
    assert 0.02 <= clustered / experiments <= 0.10
    assert naive / experiments > 0.2


def _bleu_stats(rng: np.random.Generator, reference_lengths: np.ndarray) -> list[list[float]]:
    """Per-item BLEU statistics of a model whose n-gram precision is 0.6, 0.4, 0.25, 0.15 on average."""
    test = np.maximum(1, reference_lengths + rng.integers(-2, 3, reference_lengths.size))
    guess = np.maximum(0, test[:, None] - np.arange(4)[None, :])
    correct = rng.binomial(guess, [0.6, 0.4, 0.25, 0.15])
    return np.column_stack([test, reference_lengths, guess, correct]).astype(float).tolist()


def test_paired_corpus_bleu_is_calibrated_under_the_null():
    """Two models drawn from one distribution of BLEU statistics: corpus BLEU-4 differences are significant at
    5% in about 5% of experiments."""
    experiments, items = 200, 150
    draws = resampling(items, resamples=300, seed=2)
    rejections = 0
    for seed in range(experiments):
        rng = np.random.default_rng(5000 + seed)
        references = rng.integers(4, 14, items)
        a, b = BleuStatistic(_bleu_stats(rng, references), 4), BleuStatistic(_bleu_stats(rng, references), 4)
        rejections += paired_pvalue(a, b, draws) < 0.05
    assert 0.02 <= rejections / experiments <= 0.10
