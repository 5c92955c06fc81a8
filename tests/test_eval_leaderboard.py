"""The leaderboard's statistics on results written the runner's way: paired tests that recompute corpus METEOR
on joint resamples of images, item and image counts, McNemar for accuracies, Holm across the board, and the
``focus`` option (terminal pairs, highlighted plots first in the HTML page)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evaluators.board import build_board
from evaluators.leaderboard import REPORTED_FILE
from evaluators.metrics.bootstrap import corpus_value, holm, mcnemar_exact
from evaluators.metrics.captioning import CORPUS_LEVEL, score_tokenized
from evaluators.metrics.corpus import statistic
from evaluators.tasks.base import TaskResult
from gpt4roi.cli import main as cli

THINGS = ["dog", "man", "car", "table", "umbrella", "cat", "bus", "shirt"]
COLOURS = ["red", "white", "black", "blue", "green"]
MODELS = ("floor_a", "floor_b", "mine")
PAIR_ROWS = ("| caps | METEOR |", "| acc | accuracy |")


def write_result(results: Path, model: str, task: str, result: TaskResult, primary: str) -> None:
    """``<results>/<model>/<task>.json`` and its predictions file, as :func:`evaluators.runner.run_task` writes."""
    folder = results / model
    folder.mkdir(parents=True, exist_ok=True)
    data = {"model": model, "task": task, "task_fingerprint": f"fp-{task}", "n": len(result.item_ids),
            "task_info": {"task": task, "split": "val", "primary_metric": primary, "prompt": "?"},
            "metrics": result.metrics, "ci95": result.intervals(200, 0),
            "predictions": f"{task}.predictions.jsonl"}
    (folder / f"{task}.json").write_text(json.dumps(data))
    lines = result.prediction_lines()
    (folder / f"{task}.predictions.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def caption_result(skill: float, seed: int) -> TaskResult:
    """24 region captions on 8 images; ``skill`` is the chance of naming the right object. The captions are
    lower-case words already, so they skip the PTB tokenizer's JVM."""
    rng = random.Random(seed)
    predictions, references, records = [], [], []
    for index in range(24):
        thing = THINGS[index % len(THINGS)]
        references.append([f"the {COLOURS[index % 5]} {thing} on the left", f"a {thing}"])
        said = thing if rng.random() < skill else rng.choice(THINGS)
        predictions.append(f"a {rng.choice(COLOURS)} {said}")
        records.append({"image_id": f"img{index // 3}", "prediction": predictions[-1]})
    scores = score_tokenized(dict(enumerate(references)), {i: [p] for i, p in enumerate(predictions)}, spice=False)
    return TaskResult(scores.corpus, scores.per_item, [f"cap{i}" for i in range(24)], records,
                      corpus_level=CORPUS_LEVEL, stats=scores.stats)


def accuracy_result(hits: list[int]) -> TaskResult:
    per_item = [100.0 * h for h in hits]
    records = [{"image_id": f"img{i // 4}", "correct": bool(h)} for i, h in enumerate(hits)]
    return TaskResult({"accuracy": sum(per_item) / len(per_item)}, {"accuracy": per_item},
                      [f"q{i}" for i in range(len(hits))], records)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for model, skill, seed in zip(MODELS, (0.2, 0.3, 0.9), (1, 2, 3), strict=True):
        write_result(root, model, "caps", caption_result(skill, seed), "METEOR")
    rng = random.Random(7)
    for model, p in zip(MODELS, (0.4, 0.45, 0.85), strict=True):
        write_result(root, model, "acc", accuracy_result([int(rng.random() < p) for _ in range(40)]), "accuracy")
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_recompute_corpus_meteor_and_count_images(results):
    board = build_board(results, reference=False, reported_file=REPORTED_FILE, hide_metrics=[], resamples=300,
                        seed=0, holm_correction=True)
    caps = [p for p in board.pairs if p["task"] == "caps"]
    assert [(p["model_a"], p["model_b"]) for p in caps] == [("floor_a", "floor_b"), ("floor_a", "mine"),
                                                            ("floor_b", "mine")]
    for pair in caps:
        assert (pair["metric"], pair["n"], pair["images"], pair["mcnemar_p"]) == ("METEOR", 24, 8, None)
        for side in ("a", "b"):
            written = json.loads((results / pair[f"model_{side}"] / "caps.json").read_text())["metrics"]["METEOR"]
            assert pair[f"value_{side}"] == pytest.approx(written, rel=1e-9)  # corpus METEOR, not item mean
    assert next(p for p in caps if p["model_b"] == "mine")["p_value"] < 0.05
    accuracy = [p for p in board.pairs if p["task"] == "acc"]
    for pair in accuracy:
        a = [line["correct"] for line in _lines(results / pair["model_a"] / "acc.predictions.jsonl")]
        b = [line["correct"] for line in _lines(results / pair["model_b"] / "acc.predictions.jsonl")]
        assert pair["images"] == 10 and pair["mcnemar_p"] == pytest.approx(mcnemar_exact(a, b))
    assert [p["p_value_holm"] for p in board.pairs] == pytest.approx(holm([p["p_value"] for p in board.pairs]))
    assert [p["mcnemar_p_holm"] for p in accuracy] == pytest.approx(holm([p["mcnemar_p"] for p in accuracy]))
    assert board.tasks["caps"]["resampling"] == ("by image: 24 items, 8 images; Bleu_1, Bleu_2, Bleu_3, Bleu_4, "
                                                 "METEOR recomputed from summed statistics per resample; CIDEr: "
                                                 "document frequencies of the full set, kept fixed")


def test_focus_prints_its_pairs_and_leads_the_page_with_plots(results, tmp_path, capsys):
    out = tmp_path / "board"
    assert cli(["leaderboard", f"results={results}", f"output_dir={out}", "focus=mine", "holm=true",
                "bootstrap.resamples=200"]) == 0
    printed = capsys.readouterr().out
    pair_lines = [line for line in printed.splitlines() if line.startswith(PAIR_ROWS)]
    assert len(pair_lines) == 4 and all("mine" in line for line in pair_lines)
    assert "pairs with mine (all pairs in leaderboard.md)" in printed
    written = (out / "leaderboard.md").read_text()
    assert sum(line.startswith(PAIR_ROWS) for line in written.splitlines()) == 6
    assert "| McNemar p (Holm) |" in written and "| images |" in written
    page = (out / "leaderboard.html").read_text()
    assert page.index("<figure>") < page.index("<table") and page.count("<figure>") == 2
    assert "Focus: <strong>mine</strong>" in page
    with pytest.raises(ValueError, match="focus model 'nobody' has no results"):
        build_board(results, reference=False, reported_file=REPORTED_FILE, hide_metrics=[], resamples=10, seed=0,
                    focus="nobody")


def test_predictions_without_corpus_statistics_are_refused(results, tmp_path):
    copy = tmp_path / "old"
    for model in ("floor_a", "mine"):
        (copy / model).mkdir(parents=True)
        (copy / model / "caps.json").write_text((results / model / "caps.json").read_text())
        lines = _lines(results / model / "caps.predictions.jsonl")
        (copy / model / "caps.predictions.jsonl").write_text(
            "\n".join(json.dumps({k: v for k, v in line.items() if k != "stats"}) for line in lines) + "\n")
    with pytest.raises(ValueError, match=r"old/floor_a/caps.predictions.jsonl: METEOR is a corpus statistic"):
        build_board(copy, reference=False, reported_file=REPORTED_FILE, hide_metrics=[], resamples=10, seed=0)


def test_intervals_recompute_corpus_metrics_by_image():
    """A result's METEOR interval is the one recomputed from its statistics (same draws), not the item spread."""
    result = caption_result(0.5, 11)
    ci = result.intervals(300, 4)
    meteor = statistic("METEOR", result.per_item["METEOR"], result.stats)
    assert ci["METEOR"][0] < corpus_value(meteor) < ci["METEOR"][1]
    assert result.clusters == [f"img{i // 3}" for i in range(24)]
    assert [line["image_id"] for line in result.prediction_lines()] == result.clusters
    assert all(len(line["stats"]["BLEU"]) == 10 for line in result.prediction_lines())
