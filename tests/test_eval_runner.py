"""The eval runner end to end: small built splits, the floors, resume after SIGKILL, and the leaderboard.

The splits are hand-written schema rows (validated, written with the project's atomic parquet writer) in the
layouts the VCR and RefCOCO builders produce (VCR prompts from ``builders.readers.vcr_text``), plus the real COCO
sample for referring object classification. VCR wrong options are other questions' right answers, as in
VCR's adversarial matching, so a text-only floor is above chance but far from perfect.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from builders.build import build_source
from builders.placeholders import IMAGE_TOKEN
from builders.readers import vcr_text
from builders.schema import validate
from builders.seeding import row_rng
from builders.storage.output import ShardedParquetWriter, atomic_directory
from evaluators.metrics.captioning import CAPTION_METRICS, SPICE_JARS
from evaluators.protocol import EvalModel, Request, digest

REPO = Path(__file__).resolve().parent.parent

# (question, right answer, right rationale, lure); numbers are 1-based objects as the protocol writes them.
# Every other question gets its lure, which repeats the question's words but is wrong (VCR's adversarial
# matching picks relevant wrong answers), so a text-similarity floor lands between chance and perfect.
VCR_FACTS = [
    ("Why is 1 holding an umbrella ?", "It is raining and 1 wants to stay dry .",
     "Rain is falling on the street behind 1 .", "1 is holding an umbrella to sell the umbrella ."),
    ("What is 1 going to drink ?", "The hot coffee in the cup .",
     "1 holds a steaming cup close to the mouth .", "1 is going to drink nothing ."),
    ("Where are 1 and 2 going ?", "To the train station , together .",
     "Both carry suitcases and the station sign is ahead .", "1 and 2 are going nowhere ."),
    ("How does 1 feel about the letter ?", "1 is sad after reading the letter .",
     "Tears are on the face of 1 while the letter is open .", "1 feels the letter is paper ."),
    ("What is 2 cooking in the kitchen ?", "Soup , in a big pot .",
     "Steam rises from the pot that 2 is stirring .", "2 is cooking the kitchen ."),
    ("Why is 1 running ?", "1 is running because the bus is about to leave .",
     "The bus doors are closing and 1 waves at the driver .", "1 is running because 1 likes running ."),
    ("What does 2 want from 1 ?", "The keys back .",
     "2 holds out an open hand toward the keys of 1 .", "2 wants 1 to want 2 ."),
    ("Who is 1 talking to on the phone ?", "1 is talking to a worried friend on the phone .",
     "1 looks concerned while holding the phone to the ear .", "1 is talking to the phone ."),
]
CATEGORIES = {"dog": ["a brown dog lying on the grass", "the small dog near the bench"],
              "car": ["a red car parked by the road", "the white car on the left"],
              "person": ["a man in a blue shirt", "the woman holding a bag"],
              "cat": ["a grey cat sleeping on the sofa", "the cat by the window"]}


def _row(source: str, split: str, key: str, *, task: str, regions: list[dict[str, Any]], human: str, gpt: str,
         variant: str = "", choices: Sequence[str] = (), label: int = -1, references: Sequence[str] = (),
         meta: dict[str, Any] | None = None) -> dict[str, Any]:
    row = {"id": f"{source}:{split}:{key}", "source": source, "variant": variant, "task": task, "split": split,
           "image": f"images/{key.split(':')[0]}.jpg", "image_id": key.split(":")[0], "width": 640, "height": 480,
           "regions": regions, "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{human}"},
                                                 {"from": "gpt", "value": gpt}],
           "choices": list(choices), "label": label, "references": list(references),
           "meta": json.dumps(meta or {})}
    validate(row)
    return row


def _box(k: int, label: str) -> dict[str, Any]:
    x = 20.0 + 40 * k
    return {"bbox": [x, 30.0, x + 120.0, 200.0], "segmentation": "", "label": label, "source_id": str(100 + k)}


def write_folder(folder: Path, rows_by_split: dict[str, list[dict[str, Any]]]) -> Path:
    with atomic_directory(folder) as tmp:
        for split, rows in rows_by_split.items():
            writer = ShardedParquetWriter(tmp / "data", split)
            writer.write_all(rows)
            writer.close()
    return folder


def vcr_rows(split: str, n: int, *, skew_label: int | None = None) -> list[dict[str, Any]]:
    """``vcr_qa`` and ``vcr_qar`` rows for ``n`` questions (the VCR builder's layout and prompts)."""
    rows = []
    for i in range(n):
        question, answer, rationale, lure = VCR_FACTS[i % len(VCR_FACTS)]
        rng = row_rng(7, f"{split}:{i}")
        others = [f for j, f in enumerate(VCR_FACTS) if j != i % len(VCR_FACTS)]
        rng.shuffle(others)
        label = skew_label if skew_label is not None and rng.random() < 0.7 else rng.randrange(4)
        answers = [lure if i % 2 == 0 else others[2][1], *(o[1] for o in others[:2])]
        answers.insert(label, answer)
        rationale_label = rng.randrange(4)
        rationales = [o[2] for o in others[3:6]]
        rationales.insert(rationale_label, rationale)
        regions = [_box(0, "person"), _box(1, "person")]
        meta = {"annot_id": f"{split}-{i}", "answer_label": label, "rationale_label": rationale_label}
        rows.append(_row("vcr", split, f"{i}:qa", task="vcr_qa", variant="qa", regions=regions,
                         human=vcr_text.qa_prompt(question, answers, 2), gpt=vcr_text.letter(label),
                         choices=answers, label=label, meta=meta))
        rows.append(_row("vcr", split, f"{i}:qar", task="vcr_qar", variant="qar", regions=regions,
                         human=vcr_text.qar_prompt(question, answer, rationales, 2),
                         gpt=vcr_text.letter(rationale_label), choices=rationales, label=rationale_label,
                         meta=meta))
    return rows


def refcocog_rows(split: str, n: int) -> list[dict[str, Any]]:
    rows = []
    names = sorted(CATEGORIES)
    for i in range(n):
        category = names[i % len(names)]
        captions = CATEGORIES[category]
        region = [_box(0, category)]
        if split == "train":
            rows.append(_row("refcocog", split, f"{i}:0", task="region_caption_short", variant="umd",
                             regions=region, human="Describe <region1> briefly.", gpt=captions[i % 2]))
        else:
            refs = [captions[(i + 1) % 2], f"{category} in the picture"]
            rows.append(_row("refcocog", split, f"{i}", task="region_caption_short", variant="umd",
                             regions=region, human="Describe <region1> briefly.", gpt=refs[0], references=refs))
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory, realdata) -> Path:
    """data_root with vcr/, refcocog/, coco/ built folders and the real COCO annotation file."""
    root = tmp_path_factory.mktemp("eval_world")
    write_folder(root / "vcr", {"train": vcr_rows("train", 12, skew_label=2), "validation": vcr_rows("validation", 16)})
    write_folder(root / "refcocog", {"train": refcocog_rows("train", 16), "validation": refcocog_rows("validation", 12)})
    coco_raw = realdata / "coco" / "coco_mini_2017"
    build_source("coco", coco_raw, root / "coco", progress=False, options={"check_images": False})  # no pictures
    return root


def roc_override(world_root: Path, realdata: Path) -> list[str]:
    annotation = realdata / "coco" / "coco_mini_2017" / "instances_train2017.json"
    return [f"+task_overrides.roc_semantic.dataset.annotation={annotation}",
            "+task_overrides.roc_semantic.dataset.max_images=6",
            "+task_overrides.roc_semantic.dataset.image_dir=train2017"]


class SlowCountingModel(EvalModel):
    """A deterministic model that logs every request it answers (fsync'd) and can be made slow.

    Its fingerprint ignores ``delay`` and ``log``, so a slow run and a fast rerun share the cache.
    """

    def __init__(self, log: str, delay: float = 0.0):
        self.log, self.delay = Path(log), delay

    @property
    def fingerprint(self) -> str:
        return digest("SlowCountingModel", 1)

    def _record(self, requests: Sequence[Request]) -> None:
        time.sleep(self.delay)
        with self.log.open("a") as handle:
            handle.write("".join(f"{r.key}\n" for r in requests))
            handle.flush()
            os.fsync(handle.fileno())

    def generate(self, requests: Sequence[Request], **gen_kwargs: Any) -> list[str]:
        self._record(requests)
        return [request.answer_for(len(request.key) % len(request.choices)) if request.choices
                else f"a thing number {len(request.key)}" for request in requests]

    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        self._record(requests)
        return [-float(len(r.continuation)) for r in requests]


def gpt4roi(*args: str) -> None:
    """``gpt4roi <args>`` in this process (the sentence encoder and METEOR's JVM are shared across runs)."""
    from gpt4roi.cli import main

    assert main(list(args)) == 0


def check_vcr(out: Path) -> None:
    qa = json.loads((out / "text_similarity" / "vcr_qa.json").read_text())
    assert qa["n"] == 16 and qa["task_info"]["split"] == "validation"
    assert 0 <= qa["ci95"]["accuracy"][0] <= qa["metrics"]["accuracy"] <= qa["ci95"]["accuracy"][1] <= 100
    letters = qa["extra"]["letters"]
    assert sum(letters["gold"].values()) == pytest.approx(1.0) and letters["unparsable"] == 0
    # half the questions carry a lure the text floor falls for; on the other half the right answer is nearest
    assert 25 <= qa["metrics"]["accuracy"] <= 75
    predictions = [json.loads(line) for line in (out / "text_similarity" / "vcr_qa.predictions.jsonl").open()]
    assert len(predictions) == 16 and all(p["scores"]["accuracy"] in (0, 100) for p in predictions)
    assert qa["metrics"]["accuracy"] == pytest.approx(sum(p["correct"] for p in predictions) / 16 * 100)


def check_roc(out: Path, realdata: Path) -> None:
    roc = json.loads((out / "text_similarity" / "roc_semantic.json").read_text())
    assert roc["n"] == 54 and set(roc["metrics"]) == {"SS", "S-IoU"}  # the regions of max_images=6 images
    rows = [json.loads(line) for line in (out / "text_similarity" / "roc_semantic.predictions.jsonl").open()]
    # the category is hidden from the model: the floor answers the most frequent training category
    coco = json.loads((realdata / "coco" / "coco_mini_2017" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names[a["category_id"]] for a in coco["annotations"] if not a.get("iscrowd"))
    assert {r["prediction"] for r in rows} == {counts.most_common(1)[0][0]}
    hits = [r for r in rows if r["gold"] == r["prediction"]]
    assert hits and all(r["scores"]["SS"] == pytest.approx(100, abs=1e-3) for r in hits)


def check_leaderboard(out: Path, board: Path, capsys, models: set[str], measured: int) -> None:
    """The leaderboard over ``out``: ``measured`` (model, task, metric) rows and every reported number."""
    capsys.readouterr()
    gpt4roi("leaderboard", f"results={out}", f"output_dir={board}", "reference=true")
    printed = capsys.readouterr().out
    assert "| text_similarity |" in printed and printed.startswith("## Measured")
    assert printed.index("## Measured") < printed.index("## Reported")
    check_html(board / "leaderboard.html", models=models)
    kinds = Counter(line.split(",")[0] for line in (board / "leaderboard.csv").read_text().splitlines()[1:])
    reported = yaml.safe_load((REPO / "evaluators" / "reported.yaml").read_text())["entries"]
    assert kinds == {"measured": measured, "reported": sum(len(entry["metrics"]) for entry in reported)}


def test_end_to_end_vcr_roc_and_leaderboard(world, realdata, tmp_path, capsys):
    out = tmp_path / "results"
    common = [f"data_root={world}", f"output_dir={out}", "batch_size=4", "progress=false",
              *roc_override(world, realdata)]
    gpt4roi("eval", "model=text_similarity", "tasks=[vcr_qa,vcr_qar,roc_semantic]", *common)
    gpt4roi("eval", "model=text_similarity", "tasks=[vcr_q_ar]", *common)
    gpt4roi("eval", "model=chance", "tasks=[vcr_qa,vcr_qar,vcr_q_ar,roc_semantic]", *common)
    check_vcr(out)
    check_roc(out, realdata)

    q_ar = json.loads((out / "text_similarity" / "vcr_q_ar.json").read_text())
    qa = [json.loads(line) for line in (out / "text_similarity" / "vcr_qa.predictions.jsonl").open()]
    qar = [json.loads(line) for line in (out / "text_similarity" / "vcr_qar.predictions.jsonl").open()]
    both = {p["annot_id"] for p in qa if p["correct"]} & {p["annot_id"] for p in qar if p["correct"]}
    assert q_ar["metrics"]["accuracy"] == pytest.approx(100 * len(both) / 16)
    assert q_ar["requests"]["answered_now"] == 0  # its requests are vcr_qa's and vcr_qar's, already cached
    # both models: vcr_qa, vcr_qar and vcr_q_ar accuracy, roc_semantic's SS and S-IoU
    check_leaderboard(out, tmp_path / "board", capsys, {"text_similarity", "chance"}, measured=2 * 5)


def missing_spice_jars() -> tuple[Path, list[str]]:
    """pycocoevalcap's SPICE folder and the jars SPICE needs that are not in it.

    The CoreNLP jars are downloaded on SPICE's first use, which a machine without network cannot do.
    """
    import pycocoevalcap.spice as spice_package

    folder = Path(spice_package.__file__).parent
    return folder, [name for name in SPICE_JARS if not (folder / name).is_file()]


@pytest.mark.slow
def test_end_to_end_with_captioning(world, realdata, tmp_path, capsys):
    """The issue's command: ``gpt4roi eval model=text_similarity tasks=[vcr_qa,vcr_qar,refcocog_reg,roc_semantic]``."""
    out = tmp_path / "results"
    common = [f"data_root={world}", f"output_dir={out}", "batch_size=4", "progress=false",
              *roc_override(world, realdata)]
    gpt4roi("eval", "model=text_similarity", "tasks=[vcr_qa,vcr_qar,refcocog_reg,roc_semantic]", *common)
    gpt4roi("eval", "model=chance", "tasks=[refcocog_reg]", *common)
    check_vcr(out)
    check_roc(out, realdata)
    caption = json.loads((out / "text_similarity" / "refcocog_reg.json").read_text())
    assert caption["n"] == 12
    folder, missing = missing_spice_jars()
    if missing:  # reported unavailable with its reason, never scored 0
        assert set(caption["metrics"]) == set(CAPTION_METRICS)
        assert caption["extra"]["unavailable"] == {
            "SPICE": f"Stanford CoreNLP jars for SPICE not found in {folder}: {', '.join(missing)}"}
    else:
        assert set(caption["metrics"]) == {*CAPTION_METRICS, "SPICE"} and caption["extra"]["unavailable"] == {}
    rows = [json.loads(line) for line in (out / "text_similarity" / "refcocog_reg.predictions.jsonl").open()]
    train_captions = {c for captions in CATEGORIES.values() for c in captions}
    assert all(r["prediction"] in train_captions for r in rows)  # a training caption, as the floor promises
    chance = json.loads((out / "chance" / "refcocog_reg.json").read_text())
    assert chance["metrics"]["CIDEr"] == 0 < caption["metrics"]["CIDEr"]
    # refcocog_reg's columns: Bleu_4, METEOR, ROUGE_L, CIDEr (Bleu_1-3 hidden) and SPICE when it ran, for both
    # models; text_similarity's vcr_qa and vcr_qar accuracy and roc_semantic's SS and S-IoU
    caption_columns = 4 if missing else 5
    check_leaderboard(out, tmp_path / "board", capsys, {"text_similarity", "chance"},
                      measured=2 * caption_columns + 4)


class _Tables(HTMLParser):
    """Cells of every <table> and the sources of every <img> of a page."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def check_html(path: Path, models: set[str]) -> None:
    parser = _Tables()
    parser.feed(path.read_text())
    measured = parser.tables[0]
    header = measured[0]
    assert header[0] == "model"
    assert {row[0] for row in measured[1:]} == models
    qa_column = header.index("vcr_qa accuracy")
    assert next(row for row in measured[1:] if row[0] == "text_similarity")[qa_column] != "–"
    for row in measured[1:]:
        for text in row[1:]:
            if text == "–":  # the model was not run on that task
                continue
            value, interval = text.split(" ", 1)
            low, high = (float(v) for v in interval.strip("[]").split(","))
            assert low - 1e-6 <= float(value) <= high + 1e-6
    reported = next(table for table in parser.tables[1:] if table[0][0] == "reported model")
    assert any(row[0] == "GPT4RoI-7B" and "87.4" in " ".join(row) for row in reported[1:])
    assert parser.images and all(src.startswith("data:image/png;base64,") for src in parser.images)


def _cached(cache: Path) -> set[str]:
    if not cache.exists():
        return set()
    with sqlite3.connect(cache, timeout=30) as db:
        try:
            return {row[0] for row in db.execute("SELECT request FROM answers")}
        except sqlite3.OperationalError:
            return set()


def wait_until_cached(process: subprocess.Popen, cache: Path, count: int, timeout: float) -> None:
    """Poll ``cache`` until it holds ``count`` answers, failing if ``process`` ends first or time runs out."""
    deadline = time.time() + timeout
    while len(_cached(cache)) < count:
        if process.poll() is not None:
            output = process.stdout.read()  # text or bytes, as the process was opened
            text = output if isinstance(output, str) else output.decode()
            pytest.fail(f"run ended before it could be killed: {text[-3000:]}")
        assert time.time() < deadline, f"{cache.name} cached fewer than {count} answers in {timeout} s"
        time.sleep(0.05)


def test_killed_run_resumes_without_recomputing(world, tmp_path):
    out, log1, log2 = tmp_path / "results", tmp_path / "calls1.txt", tmp_path / "calls2.txt"
    total = 16 + 16  # vcr_qa and vcr_qar requests
    common = ["model=chance", "model._target_=test_eval_runner.SlowCountingModel", "~model.seed",
              f"data_root={world}", "batch_size=2", "progress=false", "tasks=[vcr_qa,vcr_qar]"]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}", "HF_HUB_OFFLINE": "1"}
    slow = subprocess.Popen([sys.executable, "-m", "gpt4roi.cli", "eval", *common, f"output_dir={out}",
                             f"+model.log={log1}", "+model.delay=0.4"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cache = out / "cache.sqlite"
    wait_until_cached(slow, cache, 6, timeout=300)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    before = _cached(cache)
    first_calls = log1.read_text().split()
    assert len(before) < total, "killed after everything was answered: nothing to resume"
    assert not (out / "chance" / "vcr_qar.json").exists()

    gpt4roi("eval", *common, f"output_dir={out}", f"+model.log={log2}")
    second_calls = log2.read_text().split()
    assert not set(second_calls) & before, "a cached answer was asked again"
    assert len(second_calls) == len(set(second_calls)) == total - len(before)
    assert set(first_calls) | set(second_calls) == _cached(cache)
    assert len(set(first_calls) - before) <= 2  # at most the batch in flight was lost

    rows = [json.loads(line) for line in (out / "chance" / "vcr_qa.predictions.jsonl").open()]
    assert len(rows) == 16 and len({r["id"] for r in rows}) == 16
    # the resumed results equal those of an uninterrupted run
    fresh = tmp_path / "fresh"
    gpt4roi("eval", *common, f"output_dir={fresh}", f"+model.log={tmp_path / 'calls3.txt'}")
    for task in ("vcr_qa", "vcr_qar"):
        resumed = json.loads((out / "chance" / f"{task}.json").read_text())
        again = json.loads((fresh / "chance" / f"{task}.json").read_text())
        assert resumed["metrics"] == again["metrics"] and resumed["n"] == again["n"] == 16
        assert resumed["ci95"] == again["ci95"]
    # with everything cached, a further run asks the model nothing
    log4 = tmp_path / "calls4.txt"
    gpt4roi("eval", *common, f"output_dir={out}", f"+model.log={log4}")
    assert not log4.exists()
