"""The unlabeled pool read through DataLoader workers: a bounded cache on a generated image folder, the
same batches for the same seed whatever the number of workers, resumable from the step count, and
different samples per DDP rank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_dataset
from PIL import Image

from qgseg.config import ConfigError, load_config
from qgseg.data.detect import open_dataset
from qgseg.data.pool import ImagePool, PoolLoader, UnlabeledViews, pool_workers
from qgseg.engine import Interrupted, load_checkpoint
from qgseg.engine.segmentation import SegmentationTrainer


@pytest.fixture
def pool_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"u{i:02d}.png")
    return folder


def _pool(folder, cache_mb: float = 2048) -> ImagePool:
    ds = open_dataset(folder)
    return ImagePool([(ds, i) for i in ds.ids], [16, 16], "auto", True, 2, cache_mb=cache_mb, channels=3)


def _loader(pool, workers=0, start=0, rank=0, seed=3):
    return PoolLoader(pool, 4, seed, rank, start, UnlabeledViews(), workers)


def test_tiny_cache_stays_bounded_and_rereads(pool_folder):
    # one prepared sample is 3 x 16 x 16 float16 = 1,536 bytes: a 4 KB cache holds two of the ten
    pool = _pool(pool_folder, cache_mb=4096 / 2 ** 20)
    assert pool.reads == 0 and len(pool) == 10
    loader = _loader(pool)
    for _ in range(6):
        weak, strong, _, _, eight = loader.next()
        assert pool.cached_bytes <= pool.cache_bytes and pool.cached <= 2
    assert weak.shape == (4, 3, 16, 16) and strong is None and eight
    assert pool.reads > len(pool)  # 24 draws of 10 samples through a 2-sample cache: re-read from disk
    pool.bound_cache(1536)
    assert pool.cached == 1 and pool.cached_bytes == 1536


def test_workers_give_the_same_batches_resumable_and_per_rank(pool_folder):
    pool = _pool(pool_folder)
    inline = _loader(pool)
    batches = [inline.next() for _ in range(4)]
    worker = _loader(_pool(pool_folder), workers=1)  # a DataLoader worker process
    for a, b in zip(batches, (worker.next() for _ in range(4))):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
        torch.testing.assert_close(a[2], b[2], rtol=0, atol=0)
    resumed = _loader(pool, start=2)  # a run killed after step 2 reads on from step 2
    torch.testing.assert_close(resumed.next()[0], batches[2][0], rtol=0, atol=0)
    other_rank = _loader(pool, rank=1)
    assert not torch.equal(other_rank.next()[0], batches[0][0])


def test_pool_workers_default_and_config_validation():
    assert pool_workers(None, torch.device("cpu")) == 0 and pool_workers(None, torch.device("cuda")) == 2
    assert pool_workers(1, torch.device("cpu")) == 1
    with pytest.raises(ConfigError, match="ssl.pool_workers"):
        load_config(None, ["ssl.pool_workers=-1"])


@pytest.mark.parametrize("loader", [
    {"ssl__method": "mt", "ssl__unlabeled_batch_size": 2},  # the unlabeled pool through a worker
    {"ssl__method": "supervised", "data__lazy_labeled": "true"},  # the labeled cases through a worker
], ids=["unlabeled-pool", "lazy-labeled"])
def test_training_with_a_pool_worker_resumes_to_identical_weights(tmp_path, loader):
    data = tiny_dataset(tmp_path / "data", size=(16, 16))
    cfg = tiny_config(data, tmp_path, ssl__pool_workers=1, data__image_size="[16,16]", train__iterations=4,
                      train__val_every=2, train__batch_size=2, train__deterministic="true", **loader)
    SegmentationTrainer(cfg, tmp_path / "full").fit()
    with pytest.raises(Interrupted):
        SegmentationTrainer(cfg, tmp_path / "killed").fit(stop_after=3)  # last checkpoint at iteration 2
    SegmentationTrainer(cfg, tmp_path / "killed").fit(resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
