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
