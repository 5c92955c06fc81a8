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
