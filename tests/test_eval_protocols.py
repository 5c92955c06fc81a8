"""Protocol variants pinned on the official code's cases: Osprey's and Ferret's referring object classification,
GLaMM's and Osprey's RefCOCOg captioning, GPT4RoI's prompt format, and the protocol of every task config and
reported row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_eval_runner import refcocog_rows, write_folder

from evaluators.board import DASH, Board, load_reported, reported_rows
from evaluators.leaderboard import REPORTED_FILE
from evaluators.protocol import PROMPT_FORMATS, with_prompt_format
from evaluators.runner import default_task_dir
from evaluators.tasks import PROTOCOLS, available_tasks, load_task_config, make_task
from evaluators.tasks.captioning import glamm_cleanup, osprey_cleanup
from evaluators.tasks.roc import (
    ferret_correct,
    ferret_synonyms,
    osprey_answer,
    osprey_category,
    osprey_semantic_iou,
)

TASK_DIR = default_task_dir()
MODEL_DIR = TASK_DIR.parent / "model"


# --- Osprey: osprey/eval/lvis_paco_eval.py ---------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [
    ("bow_(weapon)", "bow (weapon)"),        # the qualifier stays, in its parentheses
    ("baseball_bat", "baseball bat"),
    ("dog:head", "dog head"),                # PACO part names
])
def test_osprey_category_names(name, expected):
    assert osprey_category(name) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ("Baseball bat.", "Baseball bat "),
    ("The category is: dog. ", " dog "),            # only the text after the first ':'
    ("a: b: c", " b"),                             # ... up to the next one
    ("cat, dog", "cat  dog"),
])
def test_osprey_answer_cleaning(answer, expected):
    assert osprey_answer(answer) == expected


@pytest.mark.parametrize(("answer", "category", "expected"), [
    ("Baseball bat ", "baseball bat", 100.0),
    ("bow", "bow (weapon)", 50.0),               # whitespace words: "(weapon)" is a word of its own
    ("traffic light", "traffic_light", 0.0),     # no normalisation inside the IoU itself
    ("red  car", "car", 50.0),
])
def test_osprey_semantic_iou_on_whitespace_words(answer, category, expected):
    assert osprey_semantic_iou(answer, category) == pytest.approx(expected)


def osprey_records(path: Path) -> Path:
    """Osprey's per-image layout (lvis_val_1k_category.json): categories[k] names annotations[k]."""
    records = [
        {"file_name": "000000000139.jpg", "height": 80, "width": 100, "image_id": 139,
         "categories": ["bow_(weapon)", "dog:head"],
         "annotations": [{"bbox": [5, 5, 20, 30], "segmentation": [[5, 5, 25, 5, 25, 35, 5, 35]]},
                         {"segmentation": [[40, 10, 70, 10, 70, 40, 40, 40]]}]},   # no bbox: polygon bounds
        {"file_name": "000000000285.jpg", "height": 80, "width": 100,
         "categories": ["rle_only"], "annotations": [{"segmentation": {"size": [80, 100], "counts": "abc"}}]},
    ]
    path.write_text(json.dumps(records))
    return path


def test_osprey_records_load_and_score_as_the_official_code(tmp_path):
    annotation = osprey_records(tmp_path / "lvis_val_1k_category.json")
    task = make_task("roc_semantic_osprey", TASK_DIR,
                     overrides={"roc_semantic_osprey": {"dataset": {"annotation": str(annotation)}}})
    assert task.generation["temperature"] == 0.2 and task.cfg["protocol"] == "osprey"
    jobs = task.jobs()
    assert [item.name for item in task.all_items] == ["bow (weapon)", "dog head"]
    assert task.skipped == {"no_box": 1}
    assert [j.request.row["regions"][0]["bbox"] for j in jobs] == [[5.0, 5.0, 25.0, 35.0], [40.0, 10.0, 70.0, 40.0]]
    assert jobs[0].request.row["image"] == "000000000139.jpg"
    result = task.score({jobs[0].key: "Bow.", jobs[1].key: "It is: the head of a dog."})
    assert [r["prediction"] for r in result.records] == ["Bow ", " the head of a dog "]
    assert result.per_item["S-IoU"] == [pytest.approx(50.0), pytest.approx(100 * 2 / 5)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"file_name": "x.jpg", "height": 1, "width": 1, "categories": ["a"],
                                "annotations": []}]))
    with pytest.raises(Exception, match="1 categories for 0 annotations"):
        make_task("roc_semantic_osprey", TASK_DIR,
                  overrides={"roc_semantic_osprey": {"dataset": {"annotation": str(bad)}}}).jobs()


# --- Ferret: ml-ferret ferret/eval/model_lvis.py, eval_lvis.py -----------------------------------------------------
@pytest.mark.parametrize(("answer", "name", "synonyms", "expected"), [
    ("it is not a dog, it is a cat", "cat", [], True),
    ("it is not a dog, it is a cat", "dog", [], False),     # the negated phrase is removed first
    ("The object is a baseball bat.", "baseball_bat", [], True),
    ("It is a Cat.", "cat", [], False),                     # case-sensitive, as the official substring test
    ("It is a hound.", "dog", ["hound", "domestic_dog"], True),
    ("It is no cat.", "cat", [], False),
    ("A bow.", "bow_(weapon)", ["bow_(weapon)"], True),     # the synonym "bow_(weapon)" gives "bow" and "weapon"
])
def test_ferret_matching(answer, name, synonyms, expected):
    assert ferret_correct(answer, name, synonyms) is expected


def test_ferret_synonyms_split_parenthesised_qualifiers():
    assert ferret_synonyms(["bow_(weapon)", "domestic_dog"]) == ["bow", "weapon", "domestic dog"]


def ferret_records(path: Path) -> Path:
    rows = [{"id": k, "image_path": f"coco/val2017/{k:012d}.jpg", "width": 200, "height": 100,
             "bbox": [0, 0, 1, 1], "bbox_norm": [0.1, 0.2, 0.5, 0.9], "name": name, "synonyms": [],
             "neg_class": neg} for k, (name, neg) in enumerate([("dog", "sofa"), ("cat", "car"), ("traffic_light", "bus")])]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_ferret_fixed_wrong_class_order_by_parity_and_prompt(tmp_path):
    annotation = ferret_records(tmp_path / "lvis_eval.jsonl")
    task = make_task("roc_binary_ferret", TASK_DIR,
                     overrides={"roc_binary_ferret": {"dataset": {"annotation": str(annotation)}}})
    jobs = task.jobs()
    assert [j.request.prompt for j in jobs] == [
        "<image>\nIs the object <region1> of the image a dog or a sofa?",
        "<image>\nIs the object <region1> of the image a car or a cat?",          # odd record: right class second
        "<image>\nIs the object <region1> of the image a traffic_light or a bus?",
    ]
    assert jobs[0].request.row["regions"][0]["bbox"] == pytest.approx([20.0, 20.0, 100.0, 90.0])
    assert jobs[0].request.row["image"] == "val2017/000000000000.jpg"
    result = task.score({jobs[0].key: "It is not a sofa, it is a dog.", jobs[1].key: "A car.",
                         jobs[2].key: "It is a traffic light."})
    assert result.per_item["accuracy"] == [100.0, 0.0, 100.0]


def test_our_binary_variant_keeps_drawn_pairs_with_ferrets_prompt():
    config = load_task_config("roc_binary", TASK_DIR)
    assert config["protocol"] == "ours" and config["pairs"] == "drawn"
    assert config["prompt"] == "Is the object {region} of the image a {class_a} or a {class_b}?"


# --- RefCOCOg captioning: GLaMM (eval/ddp.py, region_captioning/infer.py) and Osprey (refcocog_eval.py) ---------
@pytest.mark.parametrize(("raw", "expected"), [
    ("ASSISTANT: A man in a <p>red</p> shirt [SEG].\n", "A man in a red shirt ."),
    ("'a dog  on the grass'", "a dog on the grass"),
])
def test_glamm_cleanup(raw, expected):
    assert glamm_cleanup(raw) == expected


def test_osprey_cleanup():
    assert osprey_cleanup(" Region: a man. He walks: fast") == " a man.\n He walks"


def test_refcocog_per_sentence_variants(tmp_path):
    write_folder(tmp_path / "refcocog", {"validation": refcocog_rows("validation", 3)})
    multi = make_task("refcocog_reg", TASK_DIR, data_root=tmp_path)
    assert len(multi.all_items) == 3 and all(len(i.references) == 2 for i in multi.all_items)
    for name, prompt in (("refcocog_reg_glamm", "Can you provide me with a detailed description of the region in "
                                                "the picture marked by <region1>?"),
                         ("refcocog_reg_osprey", "Please give me a short description of <region1>.")):
        task = make_task(name, TASK_DIR, data_root=tmp_path)
        items = task.all_items
        assert len(items) == 6 and all(len(i.references) == 1 for i in items)
        assert [i.references[0] for i in items[:2]] == list(multi.all_items[0].references)
        assert items[0].request.prompt == f"<image>\n{prompt}"
    glamm = make_task("refcocog_reg_glamm", TASK_DIR, data_root=tmp_path)
    answers = {job.key: "ASSISTANT: <p>" + item.references[0] + "</p>" for job, item in
               zip(glamm.jobs(), glamm.all_items, strict=True)}
    result = glamm.score(answers)
    assert [r["prediction"] for r in result.records] == [i.references[0] for i in glamm.all_items]
    assert result.metrics["CIDEr"] > 100  # every prediction equals its single reference


# --- prompt formats and protocol names ----------------------------------------------------------------------------
def test_prompt_formats_rewrite_only_the_image_opening():
    row = {"id": "r", "conversations": [{"from": "human", "value": "<image>\nWhat is <region1>?"},
                                        {"from": "gpt", "value": ""}]}
    assert with_prompt_format(row, "gpt4roi")["conversations"][0]["value"] == (
        "The <image> provides an overview of the picture.\nWhat is <region1>?")
    assert with_prompt_format(row, "plain")["conversations"] == row["conversations"]
    assert row["conversations"][0]["value"] == "<image>\nWhat is <region1>?"  # not modified
    with pytest.raises(ValueError, match="unknown prompt_format"):
        with_prompt_format(row, "llava")
    assert set(PROMPT_FORMATS) == {"plain", "gpt4roi", "osprey"}
    assert yaml.safe_load((MODEL_DIR / "gpt4roi.yaml").read_text())["prompt_format"] == "gpt4roi"
    assert yaml.safe_load((MODEL_DIR / "image_level.yaml").read_text())["prompt_format"] == "plain"


def test_every_task_names_a_known_protocol(tmp_path):
    protocols = {name: load_task_config(name, TASK_DIR)["protocol"] for name in available_tasks(TASK_DIR)}
    assert set(protocols.values()) <= set(PROTOCOLS)
    assert {protocols["vcr_qa"], protocols["vg_reg"], protocols["refcocog_reg_glamm"], protocols["refcoco_rec"],
            protocols["roc_binary_ferret"], protocols["roc_semantic_osprey"]} == {
        "gpt4roi", "glamm", "lmms_eval", "ferret", "osprey"}
    (tmp_path / "bare.yaml").write_text("kind: caption\ndataset: {path: x, split: test}\nprompt: p\n")
    with pytest.raises(ValueError, match="protocol None is not one of"):
        load_task_config("bare", tmp_path)


def test_reported_rows_name_their_task_protocol_and_stand_only_beside_it():
    rows = load_reported(REPORTED_FILE)
    for row in rows:
        assert load_task_config(row["task"], TASK_DIR)["protocol"] == row["protocol"], row
    vg = [r for r in rows if r["model"] == "GPT4RoI-13B (VG-finetuned)"]
    assert {r["metric"]: r["value"] for r in vg} == {"Bleu_4": 11.7, "METEOR": 17.6, "ROUGE_L": 35.2, "CIDEr": 146.8}
    assert all("validation" in r["set"] for r in rows if r["task"] == "vg_reg")
    board = Board(entries=[], columns=[], tasks={"refcocog_reg_osprey": {"protocol": "osprey"},
                                                 "vg_reg": {"protocol": "ours"}}, pairs=[])
    board.reported = rows
    header, table = reported_rows(board)
    beside = {(r[0], r[1]): r[header.index("beside")] for r in table}
    assert beside[("Osprey-7B", "refcocog_reg_osprey")] == "refcocog_reg_osprey"
    assert beside[("GPT4RoI-7B", "vg_reg")] == DASH      # measured under another protocol: not placed beside it
    assert beside[("GPT4RoI-7B", "vcr_qa")] == DASH      # not measured
