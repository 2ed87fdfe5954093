"""Shared fixtures: one small synthetic Cityscapes tree per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SYNTHETIC_SIZE = (128, 256)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Cityscapes-format tree: 4 train and 3 val images (128x256) and 2 coarse train_extra."""
    from datasets.synthetic import generate

    root = tmp_path_factory.mktemp("cityscapes")
    generate(root, num=4, size=SYNTHETIC_SIZE, seed=1, splits=("train",))
    generate(root, num=3, size=SYNTHETIC_SIZE, seed=2, splits=("val",), num_coarse=2)
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (for running the CLIs as subprocesses)."""
    return REPO
