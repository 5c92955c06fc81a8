"""Task definitions, the answer cache and the floors, in process on small built folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_runner import SlowCountingModel, refcocog_rows, vcr_rows, write_folder

from baselines.floors import CategoryOracle, Chance, Prior, TextSimilarity
from evaluators.cache import AnswerCache
from evaluators.metrics.semantic import shared_encoder
from evaluators.runner import answer_jobs, default_task_dir, instantiate_model
from evaluators.tasks import load_task_config, make_task
from evaluators.tasks.roc import first_named

TASK_DIR = default_task_dir()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_tasks")
    write_folder(root / "vcr", {"train": vcr_rows("train", 12, skew_label=2), "validation": vcr_rows("validation", 10)})
    write_folder(root / "refcocog", {"train": refcocog_rows("train", 8), "validation": refcocog_rows("validation", 6)})
    return root


def answers_by(task, fn):
    """Answers for every job of ``task``, computed by ``fn(job)``."""
    return {job.key: fn(job) for job in task.jobs()}


def stored_rows(root: Path, split: str = "validation") -> dict[str, dict]:
    import datasets

    from builders.schema import FEATURES

    files = [str(p) for p in (root / "data").glob(f"{split}-*.parquet")]
    return {row["id"]: row for row in datasets.load_dataset("parquet", data_files={split: files}, split=split,
                                                              features=FEATURES).to_list()}


def test_vcr_prompts_are_the_builders_and_answers_are_masked(root):
    rows = stored_rows(root / "vcr")
    for name in ("vcr_qa", "vcr_qar"):
        task = make_task(name, TASK_DIR, data_root=root)
        jobs = task.jobs()
        assert len(jobs) == 10
        for job in jobs:
            request, row = job.request, rows[job.request.key]
            assert row["task"] == name
            assert request.prompt == row["conversations"][0]["value"]  # the paper's prompt, byte for byte
            assert request.choices == tuple(row["choices"]) and request.choice_labels == ("(A)", "(B)", "(C)", "(D)")
            masked = request.row
            assert masked["label"] == -1 and masked["references"] == [] and masked["meta"] == "{}"
            assert masked["conversations"][1] == {"from": "gpt", "value": ""}
            assert masked["regions"] == row["regions"] and masked["image"] == row["image"]


def test_vcr_generate_scoring_letters_and_unparsable(root):
    task = make_task("vcr_qa", TASK_DIR, data_root=root)
    rows = stored_rows(root / "vcr")
    # right for the first four, an unparsable sentence for the next three, a wrong letter for the rest
    order = [job.request.key for job in task.jobs()]

    def answer(job):
        k = order.index(job.request.key)
        gold = rows[job.request.key]["label"]
        if k < 4:
            return f"The answer is ({'ABCD'[gold]})."
        if k < 7:
            return "A man is holding it"
        return "(" + "ABCD"[(gold + 1) % 4] + ")"

    result = task.score(answers_by(task, answer))
    assert result.metrics["accuracy"] == pytest.approx(40.0)
    letters = result.extra["letters"]
    assert letters["unparsable"] == 3 and letters["predicted"]  # the 3 count as wrong, not dropped
    assert sum(letters["predicted"].values()) == pytest.approx(0.7)
    assert [r["predicted"] for r in result.records[4:7]] == ["?"] * 3


def test_vcr_loglikelihood_mode_normalises_by_option_length(root):
    task = make_task("vcr_qa", TASK_DIR, data_root=root, overrides={"vcr_qa": {"mode": "loglikelihood"}})
    jobs = task.jobs()
    assert len(jobs) == 40 and all(job.request.continuation in job.request.choices for job in jobs)
    assert all("(A)" not in job.request.prompt for job in jobs)  # options are continuations, not listed
    rows = stored_rows(root / "vcr")

    def loglik(job):
        request = job.request
        right = request.choices[rows[request.key.split("#")[0]]["label"]]
        per_char = -0.5 if request.continuation == right else -0.6
        return per_char * len(request.continuation)

    answers = answers_by(task, loglik)
    assert task.score(answers).metrics["accuracy"] == 100.0
    # the unnormalised sum would prefer a short wrong option somewhere: normalisation matters on this data
    raw_hits = 0
    for k in range(10):
        options = [job for job in jobs[4 * k:4 * k + 4]]
        best = max(options, key=lambda job: answers[job.key])
        raw_hits += best.request.continuation == options[0].request.choices[rows[best.request.key.split("#")[0]]["label"]]
    assert raw_hits < 10


def test_q_ar_needs_both_answers_matched_by_annot_id(root, tmp_path):
    rows = vcr_rows("validation", 10)
    qa_rows = [r for r in rows if r["task"] == "vcr_qa"]
    qar_rows = [r for r in rows if r["task"] == "vcr_qar"][::-1][:-1]  # other order, one question missing
    write_folder(tmp_path / "vcr", {"validation": qa_rows + qar_rows})
    task = make_task("vcr_q_ar", TASK_DIR, data_root=tmp_path)
    gold = {r["id"]: r["label"] for r in rows}
    annot = {r["id"]: json.loads(r["meta"])["annot_id"] for r in rows}
    number = {a: int(a.split("-")[1]) for a in annot.values()}

    def answer(job):
        row_id = job.request.key
        k = number[annot[row_id]]
        right = (k % 2 == 0) if row_id.endswith(":qa") else (k % 3 == 0)
        return "ABCD"[gold[row_id] if right else (gold[row_id] + 1) % 4]

    result = task.score(answers_by(task, answer))
    assert len(result.item_ids) == 9 and result.extra["unmatched"] == {"unmatched_qa": 1, "unmatched_qar": 0}
    matched = [k for k in range(10) if f"validation-{k}" in {annot[r["id"]] for r in qar_rows}]
    expected = sum(k % 6 == 0 for k in matched) / len(matched) * 100
    assert result.metrics["accuracy"] == pytest.approx(expected)


def test_caption_task_items_skips_and_region_id_subset(tmp_path, root):
    rows = refcocog_rows("validation", 6)
    two_regions = dict(rows[0], id="refcocog:validation:two", regions=rows[0]["regions"] * 2)
    two_regions["conversations"] = [{"from": "human", "value": "<image>\n<region1> and <region2>?"},
                                    {"from": "gpt", "value": "two"}]
    no_refs = dict(rows[1], id="refcocog:validation:norefs", references=[])
    write_folder(tmp_path / "refcocog", {"validation": [*rows, two_regions, no_refs]})
    task = make_task("refcocog_reg", TASK_DIR, data_root=tmp_path)
    jobs = task.jobs()
    assert len(jobs) == 6 and task.skipped == {"not_single_region": 1, "no_references": 1}
    request = jobs[0].request
    assert request.prompt == ("<image>\nCan you provide me with a detailed description of the region in the "
                              "picture marked by <region1>?")
    assert request.row["references"] == [] and request.fields["category"] == rows[0]["regions"][0]["label"]

    ids = tmp_path / "ids.txt"
    ids.write_text("100\n")  # every region of these rows has source_id 100: all kept
    subset = make_task("refcocog_reg", TASK_DIR, data_root=tmp_path,
                       overrides={"refcocog_reg": {"region_ids_file": str(ids)}})
    assert len(subset.jobs()) == 6 and subset.fingerprint != task.fingerprint
    ids.write_text("999\n")
    with pytest.raises(ValueError, match="no row with one region"):
        make_task("refcocog_reg", TASK_DIR, data_root=tmp_path,
                  overrides={"refcocog_reg": {"region_ids_file": str(ids)}}).jobs()


def lvis_style_file(path: Path) -> Path:
    """A small LVIS v1-style file: no file_name (coco_url instead), names with underscores and qualifiers."""
    data = {
        "images": [{"id": 1, "width": 100, "height": 80, "coco_url": "http://images.cocodataset.org/val2017/1.jpg"},
                   {"id": 2, "width": 100, "height": 80, "coco_url": "http://images.cocodataset.org/val2017/2.jpg"}],
        "categories": [{"id": 1, "name": "baseball_bat"}, {"id": 2, "name": "bow_(weapon)"},
                       {"id": 3, "name": "traffic_light"}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 30]},
                        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [40, 10, 30, 30]},
                        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1},
                        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [10, 10, 0.2, 20]},
                        {"id": 14, "image_id": 2, "category_id": 3, "bbox": [60, 20, 30, 40]}],
    }
    path.write_text(json.dumps(data))
    return path


def test_roc_from_a_coco_format_file_hides_the_category(tmp_path):
    annotation = lvis_style_file(tmp_path / "lvis_v1_val.json")
    override = {"roc_semantic": {"dataset": {"annotation": str(annotation), "source": "lvis", "image_dir": "val2017"}}}
    task = make_task("roc_semantic", TASK_DIR, overrides=override)
    jobs = task.jobs()
    assert [item.name for item in task.all_items] == ["baseball bat", "bow (weapon)", "traffic light"]  # Osprey's
    assert task.skipped == {"crowd_annotation": 1, "bad_box_degenerate": 1}
    request = jobs[0].request
    assert request.prompt == "<image>\nWhat is the category of <region1>? Using only one word or phrase."
    assert request.row["regions"][0]["label"] == "" and len(request.row["regions"]) == 1
    assert request.row["image"] == "val2017/1.jpg" and request.row["regions"][0]["bbox"] == [5.0, 5.0, 25.0, 35.0]
    result = task.score({job.key: ["Baseball bat.", "arrow", ""][k] for k, job in enumerate(jobs)})
    assert [r["prediction"] for r in result.records] == ["Baseball bat ", "arrow", ""]
    assert result.per_item["S-IoU"] == [100.0, 0.0, 0.0]
    assert result.per_item["SS"][0] == pytest.approx(100, abs=1e-3) and result.per_item["SS"][2] < 50

    with pytest.raises(FileNotFoundError, match="missing.json"):
        make_task("roc_semantic", TASK_DIR, overrides={"roc_semantic": {"dataset": {"annotation": "missing.json"}}},
                  data_root=tmp_path).jobs()


def test_roc_binary_pairs_are_seeded_and_scored_by_the_first_name(tmp_path):
    annotation = lvis_style_file(tmp_path / "lvis.json")
    override = {"roc_binary": {"dataset": {"annotation": str(annotation)}}}
    task = make_task("roc_binary", TASK_DIR, overrides=override)
    jobs = task.jobs()
    again = make_task("roc_binary", TASK_DIR, overrides=override).jobs()
    assert [j.request.prompt for j in jobs] == [j.request.prompt for j in again]
    for job, item in zip(jobs, task.all_items, strict=True):
        a, b = job.request.choices
        assert item.name in (a, b) and a != b
        assert job.request.prompt.endswith(f"Is the object <region1> of the image a {a} or a {b}?")
    answers = {job.key: f"It is a {item.name}." for job, item in zip(jobs, task.all_items, strict=True)}
    assert task.score(answers).metrics["accuracy"] == 100.0
    assert task.score({job.key: "no idea" for job in jobs}).extra["unparsable"] == 3


@pytest.mark.parametrize(("answer", "names", "expected"), [
    ("It is a dog, not a cat", ["cat", "dog"], "dog"), ("cat", ["cat", "dog"], "cat"),
    ("A baseball bat.", ["bat", "baseball bat"], "baseball bat"), ("hotdog", ["dog", "cat"], None),
    ("Traffic_light", ["traffic light", "sign"], "traffic light"), ("neither", ["a", "b"], None),
])
def test_first_named(answer, names, expected):
    assert first_named(answer, names) == expected


def test_task_configs_extend_and_errors_name_the_problem(tmp_path):
    config = load_task_config("refcoco+_reg_testB", TASK_DIR)
    assert config["dataset"] == {"path": "refcoco+", "split": "testB", "filter": {"variant": "unc"}}
    assert config["prompt"] == load_task_config("refcocog_reg", TASK_DIR)["prompt"]
    assert load_task_config("vg_reg_subset", TASK_DIR)["region_ids_file"]
    with pytest.raises(ValueError, match="unknown task 'nope'.*vcr_qa"):
        load_task_config("nope", TASK_DIR)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_task("vcr_qa", TASK_DIR, data_root=tmp_path).jobs()
    write_folder(tmp_path / "vcr", {"train": vcr_rows("train", 2)})
    with pytest.raises(FileNotFoundError, match=r"no shards of split 'validation' \(splits present: \['train'\]\)"):
        make_task("vcr_qa", TASK_DIR, data_root=tmp_path).jobs()


def test_cache_keys_and_persistence(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = AnswerCache(path, "model-a")
    cache.put_many([(("task", "row1", '{"mode": "generate"}'), "(A)"), (("task", "row1#option0", "ll"), -1.5)])
    cache.close()
    reopened = AnswerCache(path, "model-a")
    keys = [("task", "row1", '{"mode": "generate"}'), ("task", "row1#option0", "ll"),
            ("task", "row1", '{"max_new_tokens": 8, "mode": "generate"}'), ("other", "row1", '{"mode": "generate"}')]
    assert reopened.get_many(keys) == {keys[0]: "(A)", keys[1]: -1.5}
    assert AnswerCache(path, "model-b").get_many(keys) == {}


def test_runner_answers_only_missing_jobs_and_changes_with_settings(root, tmp_path):
    task = make_task("vcr_qa", TASK_DIR, data_root=root, limit=4)
    model = SlowCountingModel(log=str(tmp_path / "calls.txt"))
    cache = AnswerCache(tmp_path / "cache.sqlite", model.fingerprint)
    answers, now = answer_jobs(model, task.jobs(), cache, batch_size=3, progress=False)
    assert now == 4 and len(answers) == 4
    assert answer_jobs(model, task.jobs(), cache, batch_size=3, progress=False)[1] == 0
    longer = make_task("vcr_qa", TASK_DIR, data_root=root, limit=6, generation={"max_new_tokens": 4})
    assert answer_jobs(model, longer.jobs(), cache, batch_size=3, progress=False)[1] == 6  # new settings
    assert len((tmp_path / "calls.txt").read_text().split()) == 10


def test_instantiate_model_needs_a_protocol_model():
    assert isinstance(instantiate_model({"name": "c", "_target_": "baselines.floors.Chance"}), Chance)
    with pytest.raises(ValueError, match="not an evaluators.protocol.EvalModel"):
        instantiate_model({"name": "x", "_target_": "collections.OrderedDict"})
    with pytest.raises(ValueError, match="needs `name` and `_target_`"):
        instantiate_model({"_target_": "baselines.floors.Chance"})


def test_floors(root):
    task = make_task("vcr_qa", TASK_DIR, data_root=root)
    requests = [job.request for job in task.jobs()]
    prior = Prior(train_root=str(root))
    assert set(prior.generate(requests)) == {"(C)"}  # the training split's most frequent letter (label 2)
    chance = Chance(seed=3)
    assert chance.generate(requests) == Chance(seed=3).generate(requests)
    assert len(set(chance.generate(requests))) > 1
    assert Prior(train_root=str(root)).fingerprint != Chance().fingerprint
    assert (CategoryOracle(train_root=str(root), max_train_captions=5).fingerprint
            != CategoryOracle(train_root=str(root)).fingerprint != TextSimilarity(train_root=str(root)).fingerprint)

    text = TextSimilarity(train_root=str(root))
    chosen = [r.choice_labels.index(a) for r, a in zip(requests, text.generate(requests), strict=True)]
    ll_task = make_task("vcr_qa", TASK_DIR, data_root=root, overrides={"vcr_qa": {"mode": "loglikelihood"}})
    ll_jobs = ll_task.jobs()
    scores = text.loglikelihood([job.request for job in ll_jobs])
    by_row = [max(range(4), key=lambda k, i=i: scores[4 * i + k] / len(ll_jobs[4 * i + k].request.continuation))
              for i in range(len(requests))]
    assert by_row == chosen  # both modes rank options by the same similarity

    captions = make_task("refcocog_reg", TASK_DIR, data_root=root).jobs()
    caption_requests = [job.request for job in captions]
    # text only: the caption prompt is the same for every item, so the answer is the prior's, never the category's
    assert text.generate(caption_requests) == Prior(train_root=str(root)).generate(caption_requests)
    assert len(set(text.generate(caption_requests))) == 1
    oracle = CategoryOracle(train_root=str(root))
    answers = oracle.generate(caption_requests)
    train_captions = sorted({row["conversations"][1]["value"] for row in refcocog_rows("train", 8)})
    embedded = shared_encoder().encode(train_captions)
    for job, answer in zip(captions, answers, strict=True):  # the training caption nearest the gold category
        similarity = embedded @ shared_encoder().encode([job.request.fields["category"]])[0]
        assert answer == train_captions[int(similarity.argmax())]
    assert len(set(answers)) > 1


def _row(source, split, key, regions, human, gpt, references):
    from builders.schema import validate

    row = {"id": f"{source}:{split}:{key}", "source": source, "variant": "", "task": "region_caption",
           "split": split, "image": f"img/{key.split(':')[0]}.jpg", "image_id": key.split(":")[0], "width": 200,
           "height": 100, "regions": regions, "conversations": [{"from": "human", "value": f"<image>\n{human}"},
                                                                {"from": "gpt", "value": gpt}],
           "choices": [], "label": -1, "references": references, "meta": "{}"}
    validate(row)
    return row


def _region(source_id, label, x=10.0):
    return {"bbox": [x, 10.0, x + 50, 60.0], "segmentation": "", "label": label, "source_id": source_id}


def test_phrase_items_group_a_chain_and_hide_labels_that_are_answers(tmp_path):
    """Flickr30K-style rows (one sentence, its phrase regions): one item per (image, chain), phrases as
    references; a VG-style row whose region label is its caption never shows that label."""
    rows = [_row("flickr30k", "test", "7:0", [_region("c1", "a brown dog"), _region("c2", "the grass", 80)],
                 "Describe the image; mention <region1> and <region2>.", "A brown dog on the grass .",
                 ["A brown dog on the grass ."]),
            _row("flickr30k", "test", "7:1", [_region("c1", "a puppy")], "Describe <region1>.",
                 "A puppy runs .", ["A puppy runs ."]),
            _row("flickr30k", "test", "8:0", [_region("c1", "a man")], "Describe <region1>.", "A man .",
                 ["A man ."])]
    write_folder(tmp_path / "flickr30k", {"test": rows})
    task = make_task("flickr30k_phrase_reg", TASK_DIR, data_root=tmp_path)
    items = {item.row_id: item for item in task.all_items}
    assert set(items) == {"7#regionc1", "7#regionc2", "8#regionc1"}  # chain c1 of image 7 once, image 8 apart
    assert items["7#regionc1"].references == ("a brown dog", "a puppy")
    request = items["7#regionc1"].request
    assert request.row["regions"][0]["label"] == "" and request.fields["category"] == ""
    assert request.prompt == "<image>\nCan you give a description of the region mentioned by <region1>"

    vg = [_row("vg", "test", "5:1", [_region("1", "red kite in the sky")], "Describe <region1>.",
               "red kite in the sky", ["red kite in the sky"]),
          _row("refcocog", "test", "6", [_region("2", "kite")], "Describe <region1>.", "the red kite",
               ["the red kite", "kite high up"])]
    write_folder(tmp_path / "vg", {"test": vg[:1]})
    write_folder(tmp_path / "refcocog", {"test": vg[1:]})
    vg_request = make_task("vg_reg", TASK_DIR, data_root=tmp_path).jobs()[0].request
    assert vg_request.row["regions"][0]["label"] == "" and vg_request.fields["category"] == ""
    ref_request = make_task("refcocog_reg_umd_test", TASK_DIR, data_root=tmp_path,
                            overrides={"refcocog_reg_umd_test": {"dataset": {"filter": {"variant": ""}}}}).jobs()[0].request
    assert ref_request.row["regions"][0]["label"] == "kite" == ref_request.fields["category"]  # a category, not the answer


def test_tasks_read_corpus_folders_by_config(root, tmp_path):
    """A corpus folder (``<config>/<split>-*.parquet``, as ``gpt4roi corpus`` writes) is read with dataset.config."""
    corpus = tmp_path / "corpus"
    write_folder(corpus, {"validation": vcr_rows("validation", 3)})
    (corpus / "data").rename(corpus / "eval_mix")
    task = make_task("vcr_qa", TASK_DIR, data_root=tmp_path,
                     overrides={"vcr_qa": {"dataset": {"path": "corpus", "config": "eval_mix"}}})
    assert [job.request.key for job in task.jobs()] == [f"vcr:validation:{k}:qa" for k in range(3)]
