"""Shared fixtures. Tests that need the real datasets skip with a reason when they are absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$QGSEG_SHARED_DATA`` or ``../shared/data`` beside the project root."""
    env = os.environ.get("QGSEG_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set QGSEG_SHARED_DATA to run these tests)")
    return root


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared datasets")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test tensors are tiny: one intra-op thread is as fast, deterministic, and does not
    collapse when the 2 cores are shared with other work (2 OpenMP threads then wait on each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
