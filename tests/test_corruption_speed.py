"""The fast paths of the corruption engine give the results of the straightforward ones."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qgseg.quality import corruptions as C
from qgseg.quality.sampler import SamplerConfig, VariableQualitySampler


@pytest.mark.parametrize("shape", [(5, 1, 40, 37), (3, 1, 9, 20, 18)])
def test_scipy_labels_equal_label_propagation(shape):
    g = torch.Generator().manual_seed(0)
    for p in (0.3, 0.5, 0.6):
        x = torch.rand(shape, generator=g) < p
        assert torch.equal(C._label_cpu(x), C._label_propagate(x, 10_000))


def test_topk_mask_selection_matches_sort():
    g = torch.Generator().manual_seed(1)
    field = torch.randn(3, 1, 40, 40, generator=g)
    for k in (torch.tensor([5.0, 20.0, 0.0]), torch.tensor([800.0, 1600.0, 300.0])):  # topk / kthvalue branch
        thr = field.flatten(1).sort(1, descending=True).values.gather(1, (k.long().clamp(1) - 1)[:, None])
        ref = ((field.flatten(1) >= thr) & (k[:, None] > 0)).float().reshape(field.shape)
        assert torch.equal(C._topk_mask(field, k), ref)


@pytest.mark.parametrize("shape,ax", [((1, 3, 30, 26), 0), ((1, 3, 30, 26), 1), ((1, 2, 6, 9, 7), 1)])
def test_band_correlation_equals_grouped_conv(shape, ax):
    g = torch.Generator().manual_seed(2)
    y = torch.rand(shape, generator=g)
    kk = torch.rand(shape[1], 5, generator=g)
    d = len(shape) - 2
    wshape = [shape[1], 1] + [1] * d
    wshape[2 + ax] = 5
    conv = F.conv2d if d == 2 else F.conv3d
    ref = conv(y, kk.reshape(wshape), groups=shape[1])
    torch.testing.assert_close(C._band_correlate(y, kk, ax), ref, rtol=1e-6, atol=1e-6)


def test_fg_stats_marginals_exact_on_hard_masks():
    x = (torch.rand(4, 2, 33, 29, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    x[0, 1] = 0
    area, cent, _ = C._fg_stats(x)
    yy, xx = C._coords(x.shape[2:], x.device)
    assert torch.equal(area, x.sum((2, 3)))
    ref_y = (x * yy).sum((2, 3)) / area.clamp_min(1e-6)
    assert torch.equal(cent[1:, :, 0], ref_y[1:]) and torch.equal(cent[0, 0, 1], ((x * xx).sum((2, 3)) / area)[0, 0])
    assert cent[0, 1].tolist() == [16.0, 14.0]  # empty: image centre


def test_apply_corruption_never_cleans_its_input_in_place(monkeypatch):
    monkeypatch.setitem(C.CORRUPTIONS, "_same", C.Corruption("_same", "soft", lambda m, g, s: m))
    masks = torch.full((2, 1, 8, 8), 2.0)
    out = C.apply_corruption("_same", masks, torch.Generator().manual_seed(0), 0.5)
    assert out.max() == 1.0 and masks.max() == 2.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampler_runs_on_cuda():
    masks = (torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(4)) > 0.7).float()
    sampler = VariableQualitySampler(SamplerConfig())
    cpu = sampler.sample(masks, torch.Generator().manual_seed(0))
    gpu = sampler.sample(masks.cuda(), torch.Generator().manual_seed(0))
    assert gpu.masks.is_cuda and gpu.names == cpu.names
    torch.testing.assert_close(gpu.dice.cpu(), cpu.dice, atol=0.05, rtol=0)


def test_sampler_cleans_rows_copied_from_the_input():
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, 4:9, 4:9] = 2.0
    masks[0, 0, 0, 0] = float("nan")
    for cfg in (SamplerConfig(identity=1, single=0, chained=0, swap=0, heavy=0, catastrophic=0, blob=0,
                              soft_fraction=0),
                SamplerConfig(identity=0, single=0, chained=0, swap=1, heavy=0, catastrophic=0, blob=0)):
        out = VariableQualitySampler(cfg).sample(masks, torch.Generator().manual_seed(0)).masks
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() == 1
