"""Shared fixtures: offline Hugging Face, the real annotation samples beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
REALDATA = Path(os.environ.get("GPT4ROI_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real annotation samples (../shared/realdata); skipped when absent, except under CI=true."""
    if not REALDATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real annotation samples not found at {REALDATA} (required under CI=true)")
        pytest.skip(f"real annotation samples not found at {REALDATA}")
    return REALDATA


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory, monkeypatch):
    """Keep datasets' cache out of the user's home so tests never see stale state."""
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for the requesting module, restored after it.

    The tiny models' matrices are too small to gain from intra-op threads, and on a machine whose cores are
    shared those threads only add contention (small CPU convolutions run several times faster on one).
    Not autouse: most test modules never import torch.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class CodeRunningPickle:
    """A pickle payload that creates ``marker`` when a plain ``pickle.load`` unpickles it.

    The tests hand it to the restricted unpicklers, which must refuse its global before it runs.
    """

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def make_schema_row() -> dict:
    """A valid two-region, two-round row; tests mutate copies of it."""
    return {
        "id": "coco:train:42",
        "source": "coco",
        "variant": "",
        "task": "region_category",
        "split": "train",
        "image": "train2017/000000000042.jpg",
        "image_id": "42",
        "width": 640,
        "height": 480,
        "regions": [
            {"bbox": [0.0, 0.0, 10.0, 10.0], "segmentation": "", "label": "cat", "source_id": "1"},
            {"bbox": [100.0, 50.0, 640.0, 480.0], "segmentation": "[[1,2,3,4,5,6]]", "label": "dog", "source_id": "2"},
        ],
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is <region1>?"},
            {"from": "gpt", "value": "cat"},
            {"from": "human", "value": "And <region2>, next to <region1>?"},
            {"from": "gpt", "value": "dog"},
        ],
        "choices": [],
        "label": -1,
        "references": [],
        "meta": "{}",
    }


@pytest.fixture
def schema_row() -> dict:
    return make_schema_row()


@pytest.fixture
def records_only_builds(monkeypatch):
    """Builds that count record-level skips only: no image check, no refusal of a split for its skips.

    The builder tests feed annotation samples without pictures and tiny, deliberately broken inputs whose
    every record may be skipped; the image check and the split outcome have tests of their own.
    """
    from builders.sources import base

    monkeypatch.setattr(base, "BASE_OPTIONS", {**base.BASE_OPTIONS, "check_images": False, "max_skip_share": 1.0})
