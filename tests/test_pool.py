"""The lazily read unlabeled pool: nothing read up front, a bounded cache, the same preparation as
the segmenter's inputs, and the affine back to stored intensities (for g's own normalisation)."""
from __future__ import annotations

import numpy as np
import torch

from qgseg.data.case import Case
from qgseg.data.pool import ImagePool, raw_affine
from qgseg.data.preprocess import prepare_network_input, resize_image


class FakeDataset:
    def __init__(self, cases):
        self.cases = {c.case_id: c for c in cases}
        self.loads = 0

    def load(self, case_id):
        self.loads += 1
        return self.cases[case_id]


def _rgb(i):
    rng = np.random.default_rng(i)
    return Case(f"c{i}", rng.integers(0, 256, (3, 20, 24)).astype(np.float32), meta={"dtype": "uint8"})


def test_pool_reads_lazily_and_caches_within_its_bound():
    ds = FakeDataset([_rgb(i) for i in range(6)])
    # one prepared sample is 3 x 16 x 16 float16 = 1,536 bytes: a 4 KB cache holds two
    pool = ImagePool([(ds, f"c{i}") for i in range(6)], [16, 16], "auto", True, 2, cache_mb=4096 / 2 ** 20)
    assert ds.loads == 0 and len(pool) == 6
    g = torch.Generator().manual_seed(0)
    x, scale, shift, eight = pool.batch(torch.tensor([0, 1, 0]), g)
    assert x.shape == (3, 3, 16, 16) and eight and ds.loads == 2 and pool.cached == 2
    pool.batch(torch.tensor([2, 3, 4]), g)
    assert pool.cached == 2 and ds.loads == 5  # least recently used samples were dropped
    expected = resize_image(torch.from_numpy(prepare_network_input(_rgb(0), "auto", 2)[0]), [16, 16])[0]
    torch.testing.assert_close(x[0], expected.half().float())
    torch.testing.assert_close(scale[0], torch.full((3,), 255.0))  # unit normalisation: raw = x * 255


def test_volumes_give_one_random_slice_each_with_its_own_affine():
    rng = np.random.default_rng(0)
    vol = (rng.normal(size=(1, 5, 8, 8)) * np.arange(1, 6)[None, :, None, None] + 10).astype(np.float32)
    ds = FakeDataset([Case("v", vol, meta={"format": ".h5"})])
    pool = ImagePool([(ds, "v")], [8, 8], "zscore", True, 2)
    x, scale, shift, _ = pool.batch(torch.tensor([0, 0, 0, 0]), torch.Generator().manual_seed(1))
    assert x.shape == (4, 1, 8, 8)
    raw = x * scale[:, :, None, None] + shift[:, :, None, None]
    for i in range(4):  # every drawn slice maps back to one of the volume's slices
        assert any(torch.allclose(raw[i, 0], torch.from_numpy(vol[0, s]), atol=0.05) for s in range(5))


def test_raw_affine_inverts_each_normalisation():
    raw = np.random.default_rng(0).uniform(0, 255, (2, 6, 6)).astype(np.float32)
    for mode, norm in (("unit", raw / 255), ("none", raw),
                       ("zscore", (raw - raw.mean((1, 2), keepdims=True)) / raw.std((1, 2), keepdims=True))):
        scale, shift = raw_affine(raw, mode)
        np.testing.assert_allclose(norm * scale[:, None, None] + shift[:, None, None], raw, rtol=1e-4, atol=1e-3)
