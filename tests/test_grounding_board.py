"""The grounding leaderboard of the synthetic world, through the commands the README lists ("Grounding on the
synthetic world"): the small world, RefCOCO and Flickr30K (merged and separate boxes) built, RefCOCO's training
expressions turned into grounding rows (``gpt4roi grounding_rows``), a corpus of them (``recipe=grounding``),
``tiny_image_coords`` trained on it from the pretrained toy backbone (``experiment=tiny_image_grounding``, 120
steps), it and the box floors evaluated on ``refcoco_rec`` and both Flickr30K grounding protocols, and
``gpt4roi leaderboard holm=true``.

The floors read neither image nor expression, so their scores are exact functions of the world's boxes and are
pinned here; the trained model's scores depend on the CPU's float rounding and are only required to be finite,
with every answer counted as read, unparsable or out of range.
"""

from __future__ import annotations

import json
import math

import pytest
from test_eval_runner import gpt4roi

FLOORS = ("center_box", "whole_image", "random_box")
TRAINED = "tiny_image_coords_grounding"
TASKS = ("refcoco_rec", "flickr30k_grounding", "flickr30k_grounding_merged")
# (items, images) of each task on the small world (seed 0), and every floor's (accuracy, mIoU) x100
SIZES = {"refcoco_rec": (366, 30), "flickr30k_grounding": (266, 30), "flickr30k_grounding_merged": (266, 30)}
FLOOR_SCORES = {
    "center_box": {"refcoco_rec": (0.0, 5.6042650796714675), "flickr30k_grounding": (0.0, 5.607608227484473),
                   "flickr30k_grounding_merged": (100 * 3 / 266, 7.631032769103745)},
    "whole_image": {"refcoco_rec": (0.0, 3.647204067320554), "flickr30k_grounding": (0.0, 3.5926711331376726),
                    "flickr30k_grounding_merged": (0.0, 5.0790184449859375)},
    "random_box": {"refcoco_rec": (100 / 366, 3.017709049080957), "flickr30k_grounding": (100 / 266, 2.6756777034691774),
                   "flickr30k_grounding_merged": (100 / 266, 3.278706561566473)},
}


@pytest.mark.slow
def test_trained_image_coords_and_box_floors_on_the_grounding_leaderboard(tmp_path, one_torch_thread):
    world, built, results, board = (tmp_path / name for name in ("world", "built", "results", "board"))
    gpt4roi("synth", f"out={world}", "scale=small", "seed=0")
    gpt4roi("build", "source=refcoco", f"raw_root={world}/refer", f"out={built}/refcoco", "num_proc=1")
    gpt4roi("build", "source=flickr30k", f"raw_root={world}/flickr30k", f"out={built}/flickr30k", "num_proc=1")
    gpt4roi("build", "source=flickr30k", "source.options.boxes=separate", f"raw_root={world}/flickr30k",
            f"out={built}/flickr30k_separate", "num_proc=1")
    gpt4roi("grounding_rows", f"built={built}/refcoco", f"out={built}/refcoco_grounding")
    gpt4roi("corpus", "recipe=grounding", f"raw_root={world}", f"out={tmp_path}/corpus", "num_proc=1",
            f"recipe.sources.refcoco_grounding.build={built}/refcoco_grounding", "plots=false", "progress=false")
    gpt4roi("train", "experiment=tiny_image_grounding", f"corpus.path={tmp_path}/corpus", f"corpus.raw_root={world}",
            f"out={tmp_path}/train", "progress=false", "trainer.num_workers=0")
    tasks = f"tasks=[{','.join(TASKS)}]"
    common = [tasks, f"data_root={built}", f"output_dir={results}", "progress=false"]
    for floor in FLOORS:
        gpt4roi("eval", f"model={floor}", *common)
    gpt4roi("eval", "model=image_level", f"model.name={TRAINED}", f"model.pretrained={tmp_path}/train/hf",
            f"model.image_root={{refcoco:{world}/refer,flickr30k:{world}/flickr30k}}", "model.threads=1", *common)
    gpt4roi("leaderboard", f"results={results}", "holm=true", f"output_dir={board}")

    scores = {(model, task): json.loads((results / model / f"{task}.json").read_text())
              for model in (*FLOORS, TRAINED) for task in TASKS}  # every model has every grounding task
    for (model, task), result in scores.items():
        accuracy = "Acc@0.5" if task == "refcoco_rec" else "R@1"
        assert result["n"] == SIZES[task][0] and result["extra"]["coordinates"] == "normalized_xyxy"
        answers = result["extra"]["answers"]
        assert sum(answers.values()) == result["n"]
        if model in FLOORS:
            assert (result["metrics"][accuracy], result["metrics"]["mIoU"]) == pytest.approx(FLOOR_SCORES[model][task])
            assert answers == {"ok": result["n"], "unparsable": 0, "out_of_range": 0}
        else:
            assert all(math.isfinite(v) for v in result["metrics"].values())
            assert 0 <= result["metrics"]["mIoU"] <= 100 and set(answers) == {"ok", "unparsable", "out_of_range"}
            low, high = result["ci95"]["mIoU"]
            assert low <= result["metrics"]["mIoU"] <= high

    table = (board / "leaderboard.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in table.split("## ")[1:]}
    measured = [line for line in sections["Measured (95% bootstrap intervals)"].splitlines() if line.startswith("| ")]
    assert {line.split("|")[1].strip() for line in measured[1:]} == {*FLOORS, TRAINED}
    assert all("–" not in line for line in measured)
    task_lines = {line.split("|")[1].strip(): line for line in sections["Tasks"].splitlines() if line.startswith("| ")}
    assert "| protocol |" in task_lines["task"]
    assert "| lmms_eval |" in task_lines["refcoco_rec"] and "| ours |" in task_lines["flickr30k_grounding"]
    for task, (items, images) in SIZES.items():
        assert f"by image: {items} items, {images} images" in task_lines[task]
    answers = [line for line in sections[next(s for s in sections if s.startswith("Box answers"))].splitlines()
               if line.startswith(f"| {TRAINED} | refcoco_rec |")]
    counts = scores[TRAINED, "refcoco_rec"]["extra"]["answers"]
    assert answers == [f"| {TRAINED} | refcoco_rec | normalized_xyxy | 366 | {counts['ok']} | "
                       f"{counts['unparsable']} | {counts['out_of_range']} |"]
    pairs = sections[next(s for s in sections if s.startswith("Paired"))].splitlines()
    assert "| paired bootstrap p | p (Holm) | McNemar p | McNemar p (Holm) |" in pairs[2]
    pair_rows = [line.split("|")[1:-1] for line in pairs[4:] if line.startswith("| ")]
    assert len(pair_rows) == 3 * 6  # every pair of the 4 models on each task
    for row in pair_rows:
        assert row[4].strip() == str(SIZES[row[0].strip()][0]) and row[5].strip() == "30"
        p, p_holm, mcnemar, mcnemar_holm = (float(cell) for cell in row[9:13])
        assert 0 < p <= p_holm <= 1 and 0 < mcnemar <= mcnemar_holm <= 1
    center_random = next(r for r in pair_rows if r[0].strip() == "flickr30k_grounding_merged"
                         and r[2].strip() == "center_box" and r[3].strip() == "random_box")
    assert float(center_random[11]) == pytest.approx(0.625)  # McNemar: 3 against 1 discordant items, exact
