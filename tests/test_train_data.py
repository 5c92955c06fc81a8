"""The training data path: deterministic rank-split order, resume offsets, workers, pre-flight, images."""

from __future__ import annotations

import json

import datasets
import pytest
from omegaconf import OmegaConf
from test_train_loop import corpus_rows, standin_collate, standin_encode, write_corpus

from builders.errors import SchemaError
from gpt4roi.processing import RowInputError
from gpt4roi.train.data import (
    CorpusSpec,
    ImageLoader,
    MicroBatches,
    letter_answer,
    loader,
    make_plan,
    open_rows,
)
from gpt4roi.train.preflight import corpus_fingerprint, preflight


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    write_corpus(root / "corpus", root / "raw", {"train": 20})
    return root


def spec(folder, **changes) -> CorpusSpec:
    base = {"path": str(folder / "corpus"), "name": None, "split": "train", "streaming": False, "tasks": [],
            "image_root": str(folder / "raw"), "raw_root": None, "answer_format": "as_is", "max_rows": None}
    return CorpusSpec.from_config(OmegaConf.create(dict(base, **changes)))


def row_ids(folder, corpus: CorpusSpec, *, world: int, rank: int, per_device: int, start: int = 0,
            workers: int = 0, accum: int = 1) -> list[list[str]]:
    """The row ids of each micro-batch this rank trains on (2 epochs of global batch 4)."""
    rows = open_rows(corpus)
    plan = make_plan(None if corpus.streaming else len(rows), 2, 12 if corpus.streaming else -1, 4,
                     per_device * world, accum)
    def encode(row, image):
        return {"id": row["id"], **standin_encode(row, image)}

    def collate(items):
        return {"ids": [item["id"] for item in items], **standin_collate(items)}

    stream = MicroBatches(rows, plan, rank=rank, per_device=per_device, seed=3, start_step=start,
                          encode=encode, collate=collate, images=ImageLoader(corpus.image_root), letter=False)
    return [batch["ids"] for batch in loader(stream, workers, seed=3)]


@pytest.mark.parametrize("streaming", [False, True])
def test_two_ranks_split_each_global_batch_of_one_rank(folder, streaming, monkeypatch):
    # datasets pauses 5 s after each finished stream (an Arrow shutdown workaround); 9 epochs are read here
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    corpus = spec(folder, streaming=streaming)
    one = row_ids(folder, corpus, world=1, rank=0, per_device=4)
    rank0 = row_ids(folder, corpus, world=2, rank=0, per_device=2)
    rank1 = row_ids(folder, corpus, world=2, rank=1, per_device=2)
    assert len(one) == (12 if streaming else 10)  # 20 rows / 4: 5 steps per epoch x 2 (stream: max_steps=12)
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == one
    if not streaming:
        assert sorted(sum(one[:5], [])) == sorted(f"synthetic:train:{i}" for i in range(20))  # epoch = all rows
        assert one[:5] != one[5:]  # each epoch its own order


def test_resume_offset_and_workers_keep_the_order(folder):
    corpus = spec(folder)
    full = row_ids(folder, corpus, world=1, rank=0, per_device=2, accum=2)
    assert row_ids(folder, corpus, world=1, rank=0, per_device=2, accum=2, start=3) == full[6:]
    assert row_ids(folder, corpus, world=1, rank=0, per_device=2, accum=2, workers=2) == full


def test_letter_answers_for_multiple_choice_rows():
    row, _ = corpus_rows(1, "train", 0)[0]
    mc = dict(row, task="vcr_qa", choices=["a", "b", "c", "d"], label=2)
    assert letter_answer(mc)["conversations"][-1]["value"] == "(C)"
    assert letter_answer(mc)["conversations"][0] == mc["conversations"][0]
    assert letter_answer(row) == row  # not multiple choice: unchanged


def test_preflight_names_the_bad_row_and_caches_good_corpora(tmp_path, folder):
    good = spec(folder)
    rows = open_rows(good)
    fingerprint = corpus_fingerprint(good, rows)
    assert preflight(rows, fingerprint, tmp_path / "cache", show_progress=False) == 20
    [marker] = (tmp_path / "cache").iterdir()
    assert json.loads(marker.read_text()) == {"rows": 20, "fingerprint": fingerprint}

    def short_only(row, image):  # an encoder with a length limit, as the processor's max_length
        if row["id"] == "synthetic:train:7":
            raise RowInputError(row["id"], "its first exchange needs 300 tokens; max_length is 256")
        return standin_encode(row, image)

    with pytest.raises(ValueError, match=r"synthetic:train:7.*max_length is 256.*raise architecture.max_length"):
        preflight(rows, fingerprint, tmp_path / "cache", short_only, "limit-256", show_progress=False)
    assert preflight(rows, fingerprint, tmp_path / "cache", standin_encode, "no-limit", show_progress=False) == 20

    bad, _ = corpus_rows(1, "train", 9)[0]
    bad = dict(bad, id="synthetic:train:bad", conversations=[
        {"from": "human", "value": "<image>\nWhat colour is <region2>?"}, {"from": "gpt", "value": "red"}])
    write_corpus(tmp_path / "bad", tmp_path / "raw", {"train": 3}, bad_row=bad)
    bad_spec = spec(tmp_path, path=str(tmp_path / "bad"))
    bad_rows = open_rows(bad_spec)
    with pytest.raises(SchemaError, match=r"synthetic:train:bad.*reference_exists"):
        preflight(bad_rows, corpus_fingerprint(bad_spec, bad_rows), tmp_path / "cache", show_progress=False)
    assert corpus_fingerprint(bad_spec, bad_rows) != fingerprint
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the two corpora that passed, none for the bad one


def test_tasks_filter_and_missing_images(tmp_path, folder):
    assert len(open_rows(spec(folder, tasks=["vcr_qa"]))) == 0
    assert len(open_rows(spec(folder, tasks=["region_caption"], max_rows=7))) == 7
    row = open_rows(spec(folder))[0]
    with pytest.raises(RowInputError, match="synthetic:train:.*does not exist"):
        ImageLoader({"synthetic": str(tmp_path)})(row)
    with pytest.raises(RowInputError, match="needs an image_root"):
        ImageLoader({"coco": str(folder / "raw")})(row)
    assert ImageLoader({"*": str(folder / "raw")})(row).size == (32, 32)
