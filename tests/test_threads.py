"""CPU thread defaults (qgseg.threads): passive OpenMP wait policy, runtime.threads, per-job threads."""
from __future__ import annotations

import argparse
import os

import pytest
import torch

from qgseg import threads
from qgseg.cli.main import _load_cfg, main
from qgseg.compare import _env
from qgseg.config import ConfigError, load_config


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_env_defaults_fill_only_missing_values():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    added = threads.set_env_defaults(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE", "a user's explicit wait policy is kept"
    assert env["KMP_BLOCKTIME"] == "0" and env["OMP_NUM_THREADS"] == str(threads.default_threads())
    assert "OMP_WAIT_POLICY" not in added
    assert threads.set_env_defaults({"OMP_NUM_THREADS": "3", **threads.WAIT_ENV}) == {}


def test_cli_main_sets_env_defaults_before_any_command(monkeypatch, capsys):
    for key in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main([]) == 2  # no command: prints the help
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "0"
    assert os.environ["OMP_NUM_THREADS"] == "1", "the user's thread count is kept"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    main([])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    capsys.readouterr()


def test_resolve_threads_precedence(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 32)
    assert threads.default_threads() == threads.MAX_DEFAULT_THREADS == 8
    assert threads.resolve_threads(3, {"OMP_NUM_THREADS": "5"}) == 3  # runtime.threads wins
    assert threads.resolve_threads(None, {"OMP_NUM_THREADS": "5"}) == 5
    assert threads.resolve_threads(None, {"OMP_NUM_THREADS": "0"}) == 8  # invalid -> default
    assert threads.resolve_threads(None, {}) == 8
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.resolve_threads(None, {}) == 2
    assert threads.per_job_threads(3, {}) == 1 and threads.per_job_threads(1, {}) == 2


def test_runtime_threads_validated():
    assert load_config("demo").runtime.threads is None
    assert load_config("demo", ["runtime.threads=2"]).runtime.threads == 2
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ConfigError, match="runtime.threads"):
            load_config("demo", [f"runtime.threads={bad}"])


def test_loaded_config_applies_runtime_threads(monkeypatch, keep_threads):
    args = argparse.Namespace(overrides=["runtime.threads=2"], data_root=None, output_dir=None, name=None,
                              skip_bad=False)
    assert _load_cfg(args, "demo").runtime.threads == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args.overrides = []
    _load_cfg(args, "demo")
    assert torch.get_num_threads() == 1, "runtime.threads null: OMP_NUM_THREADS"


def test_compare_gives_each_job_its_share(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    assert threads.per_job_threads(3, {}) == 2 and threads.per_job_threads(16, {}) == 1
    assert threads.per_job_threads(1, {"OMP_NUM_THREADS": "1"}) == 1  # the user's OMP_NUM_THREADS=1 holds
    assert threads.per_job_threads(2, {"OMP_NUM_THREADS": "8"}) == 4
    env = _env(None, 4)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4"
    assert _env("1", 2)["CUDA_VISIBLE_DEVICES"] == "1" and _env("1", 2)["OMP_NUM_THREADS"] == "2"


class _ThreadCount(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return torch.get_num_threads()


def test_dataloader_workers_use_one_thread(keep_threads):
    torch.set_num_threads(2)
    loader = torch.utils.data.DataLoader(_ThreadCount(), num_workers=1, batch_size=None)
    assert list(loader) == [1]
