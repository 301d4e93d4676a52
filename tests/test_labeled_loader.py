"""Labeled cases read lazily through the unlabeled pool's DataLoader machinery (``data.lazy_labeled``):
prepared like a TensorBank, the same batches for 0 and 1 workers, resumable from the step count, a bounded
cache, and a supervised run that resumes to identical weights."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_config, tiny_dataset

from qgseg.config import ConfigError, load_config
from qgseg.data.detect import open_dataset
from qgseg.data.pool import LabeledLoader, LabeledPool, labeled_bytes
from qgseg.data.preprocess import TensorBank
from qgseg.engine.segmentation import SegmentationTrainer


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """A tiny demo dataset (24 x 20 grey images) and its labeled ids."""
    root = tiny_dataset(tmp_path_factory.mktemp("lab") / "data", size=(24, 20))
    ds = open_dataset(root)
    return ds, list(ds.labeled_ids)[:6]


def _pool(labeled, resize=False, cache_mb: float = 64, fg=0.5) -> LabeledPool:
    ds, ids = labeled
    return LabeledPool([(ds, i) for i in ids], [16, 16], "auto", resize, 2, cache_mb, channels=1, fg_oversample=fg)


def test_prepared_like_the_tensor_bank(labeled):
    ds, ids = labeled
    pool = _pool(labeled, resize=True)
    bank = TensorBank.from_cases([ds.load(i) for i in ids], [16, 16], "auto", True, 2)
    for i in range(len(ids)):
        x, y, _ = pool._get(i)
        assert x.dtype == torch.float16 and y.dtype == torch.uint8
        torch.testing.assert_close(x[0].float(), bank.images[i], rtol=0, atol=2e-3)  # float16 rounding only
        assert torch.equal(y[0].long(), bank.labels[i])


def test_same_batches_for_0_and_1_workers_and_resume(labeled):
    inline = LabeledLoader(_pool(labeled), 3, seed=5, rank=0, start=0, workers=0)
    batches = [inline.next() for _ in range(4)]
    image, label = batches[0]
    assert image.shape == (3, 1, 16, 16) and image.dtype == torch.float32
    assert label.shape == (3, 16, 16) and label.dtype == torch.int64
    assert any(lab.any() for _, lab in batches)  # foreground oversampling finds the objects
    worker = LabeledLoader(_pool(labeled), 3, seed=5, rank=0, start=0, workers=1)
    for (a, ya), (b, yb) in zip(batches, (worker.next() for _ in range(4))):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    resumed = LabeledLoader(_pool(labeled), 3, seed=5, rank=0, start=2, workers=0)
    image, label = resumed.next()  # a run killed after step 2 reads on from step 2
    assert torch.equal(image, batches[2][0]) and torch.equal(label, batches[2][1])


def test_cache_stays_bounded_and_rereads(labeled):
    # one prepared case is 24 x 20 float16 + uint8 = 1,440 bytes: a 3 KB cache holds two of the six
    pool = _pool(labeled, cache_mb=3000 / 2 ** 20)
    loader = LabeledLoader(pool, 4, seed=0, rank=0, start=0, workers=0)
    for _ in range(5):
        loader.next()
        assert pool.cached_bytes <= pool.cache_bytes and pool.cached <= 2
    assert pool.reads > len(pool)


def test_config_and_auto_choice(tmp_path):
    with pytest.raises(ConfigError, match="data.lazy_labeled"):
        load_config(None, ["data.lazy_labeled=sometimes"])
    with pytest.raises(ConfigError, match="data.labeled_cache_mb"):
        load_config(None, ["data.labeled_cache_mb=0"])
    data = tiny_dataset(tmp_path / "data", size=(16, 16))
    ds = open_dataset(data)
    first = ds.load(ds.labeled_ids[0])
    assert labeled_bytes(first, 10, [16, 16], "auto", True, 2) == 10 * 16 * 16 * (4 + 8)
    default = SegmentationTrainer(tiny_config(data, tmp_path, data__image_size="[16,16]"), tmp_path / "a")
    default.setup_data()
    assert default.labeled_bank is not None and default.labeled_pool is None  # false: today's path
    # auto with a 1 MB bound: 8 cases of 512 x 512 would hold 8 x 512 x 512 x 12 bytes = 24 MB
    auto = SegmentationTrainer(tiny_config(data, tmp_path, data__image_size="[512,512]", data__lazy_labeled="auto",
                                           data__labeled_cache_mb=1), tmp_path / "b")
    auto.setup_data()
    assert auto.labeled_bank is None and len(auto.labeled_pool) == len(auto.data.labeled)
