"""``gpt4roi demo preset=quick``: the comparison end to end (slow, several minutes on 2 cores).

Every model of the demo is trained (stage 1 then 2, from the committed backbone) and evaluated with the floors;
the leaderboard has a measured value for every model on every task it can answer (the floors skip
``region_sensitivity``), the terminal shows GPT4RoI-tiny's paired tests, the HTML report is written, and the
demo ends with the chat command of its trained model.
"""

from __future__ import annotations

import csv
import json

import pytest

from gpt4roi.cli import main
from gpt4roi.configs import compose

TASKS = ("refcocog_reg", "roc_semantic", "region_sensitivity", "vcr_qa", "vcr_qar", "vcr_q_ar")
TRAINED = ("gpt4roi_tiny", "tiny_image_words", "tiny_image_coords", "tiny_image_overlay", "tiny_image_crop",
           "tiny_blind")
MODELS = (*TRAINED, "chance", "prior", "text_similarity", "category_oracle")


def test_the_presets_are_a_config_group_that_explicit_settings_override():
    cfg = compose("demo", ["preset=quick", "compare.limit=3"])
    assert (cfg.scale, cfg.compare.stage1_steps, cfg.compare.stage2_steps, cfg.compare.limit) == ("small", 20, 40, 3)
    full = compose("demo", [])
    assert full.scale == "small" and full.compare.stage2_steps == 2 * full.compare.stage1_steps
    assert list(full.compare.tasks) == list(TASKS) and list(full.compare.model_only_tasks) == ["region_sensitivity"]
    assert full.compare.focus == "gpt4roi_tiny" and full.compare.recipes.stage2 == "stage2_categories"


def test_every_model_trains_from_the_backbone_with_the_papers_recipe(tmp_path):
    """Same backbone, rows, steps and optimiser for every model; stage 1 trains only the part between image and
    LLM, stage 2 all but the vision tower; the demo's stage-2 recipe keeps the COCO category rows."""
    from baselines.demo import DemoRun, train_config

    cfg = compose("demo", [f"work_dir={tmp_path}"])
    run = DemoRun(cfg=cfg, work=tmp_path, console=None)
    trainable = {}
    for model in ("tiny", "tiny_image_words", "tiny_image_crop"):
        for stage in ("stage1", "stage2"):
            train = train_config(run, model, stage)
            assert train.architecture.backbone == cfg.compare.backbone
            assert (train.corpus.path, train.trainer.optimizer.lr, train.trainer.global_batch_size, train.seed) == (
                str(run.corpus(stage)), 1e-3, 8, 0)
            assert train.trainer.max_steps == (60 if stage == "stage1" else 120)
            trainable[model, stage] = sorted(train.trainer.trainable)
    assert trainable["tiny", "stage1"] == ["region_module"]  # the projector comes pretrained with the backbone
    assert trainable["tiny_image_words", "stage1"] == ["projector"]
    assert trainable["tiny", "stage2"] == ["llm", "projector", "region_module"]
    assert trainable["tiny_image_crop", "stage2"] == ["llm", "projector"]
    recipe = compose("corpus", ["recipe=stage2_categories"]).recipe
    assert recipe.sources.coco.builder == "coco" and set(compose("corpus", ["recipe=stage2"]).recipe.sources) < set(
        recipe.sources)


@pytest.mark.slow
def test_quick_demo_trains_evaluates_and_ranks_every_model_on_every_task(tmp_path, capsys):
    work = tmp_path / "demo"
    status = main(["demo", f"work_dir={work}", "preset=quick"])
    output = capsys.readouterr().out
    assert status == 0, output[-5000:]
    assert "## Measured (95% bootstrap intervals)" in output and "## Paired bootstrap tests" in output
    assert "| chance | prior |" not in output  # pairs without GPT4RoI-tiny stay in the report files
    assert output.rstrip().splitlines()[-1].strip() == f"gpt4roi chat model={work / 'train' / 'tiny_stage2'}"
    for model in TRAINED:
        summary = json.loads((work / "train" / f"{model.removeprefix('gpt4roi_')}_stage2" / "summary.json").read_text())
        assert summary["steps"] == 40
    with open(work / "leaderboard" / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    measured = {(row["model"], row["task"]) for row in rows if row["kind"] == "measured" and row["value"] not in ("", "nan")}
    missing = [(model, task) for model in MODELS for task in TASKS if (model, task) not in measured
               and (model in TRAINED or task != "region_sensitivity")]
    assert not missing, f"no measured value for {missing}"
    # every task answered on the same items by every model: the first compare.limit=16 of each
    for task in TASKS[:-1]:
        models = TRAINED if task == "region_sensitivity" else MODELS
        counts = {model: json.loads((work / "results" / model / f"{task}.json").read_text())["n"] for model in models}
        assert set(counts.values()) == {16}, (task, counts)
    blind = json.loads((work / "results" / "tiny_blind" / "region_sensitivity.json").read_text())["metrics"]
    # no image and the same prompt: a tie on every item (up to float rounding between batches)
    assert blind["right_wins"] == 50.0 and blind["gap"] == pytest.approx(0.0, abs=1e-3)
    page = (work / "leaderboard" / "leaderboard.html").read_text()
    assert all(model in page for model in MODELS)
