"""Shared test set-up: offscreen Qt, single-threaded torch, paths to optional real data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CXR_STUDIO_TEST", "1")

REPO = Path(__file__).resolve().parents[1]
NLM_ROOT = Path(os.environ.get("CXR_STUDIO_NLM_DATA", REPO.parent / "shared" / "data" / "nlm-tb"))


@pytest.fixture(scope="session")
def nlm_root() -> Path:
    """The real NLM Montgomery/Shenzhen data; tests that need it skip when it is absent."""
    if not (NLM_ROOT / "MontgomerySet").is_dir() or not (NLM_ROOT / "ChinaSet_AllFiles").is_dir():
        pytest.skip(f"real NLM data not present at {NLM_ROOT}")
    return NLM_ROOT


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
