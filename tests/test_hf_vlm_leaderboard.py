"""Hub VLMs on the leaderboard: tiny LLaVA and Qwen2-VL (``hf_vlm``) and a converted tiny checkpoint with the
official GPT4RoI names (``gpt4roi convert``, asked in GPT4RoI's own prompt format) beside GPT4RoI-tiny, an
image-level baseline and the floors, on the same items of the synthetic world (tiny scale), through the commands a
user runs.

Every network has random weights (nothing here is trained), so the scores say nothing about the models; what is
checked is that one leaderboard holds them all, on the same rows, with paired comparisons. The table is written
to ``$HF_VLM_BOARD`` when set (the README quotes one run).
"""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
from test_eval_runner import gpt4roi

from baselines.hf_vlm_tiny import write_tiny_vlm
from baselines.image_level import build_image_model, save_image_model
from builders.build import build_source
from builders.synthetic import SOURCE_OPTIONS, SOURCE_RELEASE, synthesize
from gpt4roi.configs import compose
from gpt4roi.convert.tiny import GROUPS, write_released
from gpt4roi.modeling import build_model
from gpt4roi.modeling.factory import save_pretrained

SOURCES = ("coco", "refcocog", "vcr")
TASKS = "[refcocog_reg,roc_semantic,vcr_qa,vcr_qar,vcr_q_ar]"
FLOORS = ("chance", "prior", "text_similarity")


def architecture(name: str):
    return compose("train", [f"architecture={name}"]).architecture


@pytest.mark.slow
def test_hub_vlms_gpt4roi_and_baselines_on_one_leaderboard(tmp_path):
    world, built, folders, results = (tmp_path / name for name in ("world", "built", "models", "results"))
    synthesize(world, "tiny", 0)
    for source in SOURCES:
        build_source(source, world / SOURCE_RELEASE[source], built / source, seed=0,
                     options=SOURCE_OPTIONS.get(source), progress=False)
    save_pretrained(*build_model(architecture("tiny")), folders / "gpt4roi_tiny")
    save_image_model(*build_image_model(architecture("tiny_image_coords")), folders / "tiny_image_coords")
    for family in ("llava", "qwen2_vl"):
        write_tiny_vlm(family, folders / family)
    released = write_released(tmp_path / "released")  # a delta over a base LLaMA, as GPT4RoI-7B is released
    gpt4roi("convert", f"checkpoint={released.delta}", f"base={released.base}", f"vision={released.clip}",
            f"out={folders / 'official'}", f"region_norm_groups={GROUPS}")

    roots = ",".join(f"{source}:{world / SOURCE_RELEASE[source]}" for source in SOURCES)
    common = [f"data_root={built}", f"output_dir={results}", f"tasks={TASKS}", "limit=8", "progress=false",
              "+generation.max_new_tokens=12", "+task_overrides.vcr_qa.mode=loglikelihood",
              "+task_overrides.vcr_qar.mode=loglikelihood",
              f"+task_overrides.roc_semantic.dataset.annotation={world}/coco/annotations/instances_val2017.json"]
    models = {
        "gpt4roi_tiny": ["model=gpt4roi", "model.prompt_format=plain"],
        "gpt4roi_official_tiny": ["model=gpt4roi", "model.prompt_format=gpt4roi"],  # its own prompts and processor
        "tiny_image_coords": ["model=image_level", "model.prompt_format=plain"],
        "llava_tiny": ["model=hf_vlm_llava", "model.dtype=float32", "model.device=cpu"],
        "qwen2_vl_tiny": ["model=hf_vlm_qwen2_vl", "model.dtype=float32", "model.device=cpu",
                          "model.processor_class=baselines.hf_vlm_tiny:ImageOnlyQwen2VLProcessor"],
    }
    folder_of = {"gpt4roi_tiny": "gpt4roi_tiny", "gpt4roi_official_tiny": "official", "tiny_image_coords": "tiny_image_coords", "llava_tiny": "llava",
                 "qwen2_vl_tiny": "qwen2_vl"}
    for floor in FLOORS:
        gpt4roi("eval", f"model={floor}", *common)
    for name, overrides in models.items():
        gpt4roi("eval", *overrides, f"model.name={name}", f"model.pretrained={folders / folder_of[name]}",
                f"model.image_root={{{roots}}}", *common)
    board = tmp_path / "board"
    gpt4roi("leaderboard", f"results={results}", f"output_dir={board}")

    table = (board / "leaderboard.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for name in (*FLOORS, *models):
        assert name in rows and "–" not in rows[name], f"{name} is missing a task on the leaderboard"
    for name in models:  # the same 8 items of every task for every model, each task with finite metrics
        for task in ("refcocog_reg", "roc_semantic", "vcr_qa"):
            assert (results / name / f"{task}.predictions.jsonl").read_text().count("\n") == 8
        for task in TASKS.strip("[]").split(","):
            metrics = json.loads((results / name / f"{task}.json").read_text())["metrics"]
            assert metrics and all(math.isfinite(value) for value in metrics.values()), (name, task, metrics)
    if os.environ.get("HF_VLM_BOARD"):
        shutil.copy(board / "leaderboard.md", os.environ["HF_VLM_BOARD"])
