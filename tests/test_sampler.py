"""Tests of the variable-quality sampler."""
from __future__ import annotations

import pytest
import torch

from qgseg.quality.corruptions import dice_per_class
from qgseg.quality.sampler import CATEGORY_NAMES, SampleBatch, SamplerConfig, VariableQualitySampler


def random_discs(n: int, size: int = 24, k: int = 1, seed: int = 0, d3: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sp = (6, size, size) if d3 else (size, size)
    coords = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in sp), indexing="ij")
    c = torch.rand(n, k, len(sp), generator=g) * torch.tensor(sp, dtype=torch.float32) * 0.5 + torch.tensor(sp) * 0.25
    r = 2 + torch.rand(n, k, generator=g) * size * 0.2
    dist = sum((coords[i] - c[(slice(None), slice(None), i) + (None,) * len(sp)]) ** 2 for i in range(len(sp)))
    m = (dist <= r[(...,) + (None,) * len(sp)] ** 2).float()
    m[torch.rand(n, generator=g) < 0.05] = 0  # some empty truths
    return m


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- config
def test_config_defaults_and_validation() -> None:
    cfg = SamplerConfig()
    total = sum(getattr(cfg, c) for c in CATEGORY_NAMES)
    assert abs(total - 1) < 1e-9 and cfg.weak == 0 and cfg.soft_fraction == 0.15
    assert abs(cfg.identity - 0.20) < 1e-9
    scaled = SamplerConfig(identity=2, single=2, chained=0, swap=0, heavy=0, catastrophic=0, blob=0)
    assert scaled.identity == 0.5
    with pytest.raises(ValueError):
        SamplerConfig(single=-0.1)
    with pytest.raises(ValueError):
        SamplerConfig(identity=0, single=0, chained=0, swap=0, heavy=0, catastrophic=0, blob=0, weak=0)
    with pytest.raises(ValueError):
        SamplerConfig.from_dict({"singel": 0.3})
    with pytest.raises(ValueError):
        SamplerConfig(soft_fraction=1.5)
    assert SamplerConfig.from_dict({"single": 1.0, "balance_bins": 5}).balance_bins == 5
    p = SamplerConfig(weak=0.5).probabilities(weak_available=False)
    assert p["weak"] == 0 and abs(sum(p.values()) - 1) < 1e-9


# ---------------------------------------------------------------------------- sampling
def test_category_frequencies_match_config() -> None:
    cfg = SamplerConfig(soft_fraction=0.0)
    s = VariableQualitySampler(cfg, 2, 1)
    m = random_discs(2400, size=16)
    sb = s.sample(m, gen(0))
    n = len(sb.category)
    for c in CATEGORY_NAMES:
        freq = sb.category.count(c) / n
        target = getattr(cfg, c)
        assert abs(freq - target) < 4 * (target * (1 - target) / n) ** 0.5 + 1e-3, (c, freq, target)
    assert sb.dice.shape == (n, 1) and (sb.dice >= 0).all() and (sb.dice <= 1).all()
    ident = [i for i, c in enumerate(sb.category) if c == "identity"]
    assert torch.allclose(sb.dice[ident], torch.ones(len(ident), 1))
    assert torch.equal(sb.masks[ident], m[ident])


def test_sample_contract_and_targets() -> None:
    s = VariableQualitySampler(SamplerConfig(), 2, 1)
    m = random_discs(64)
    sb = s.sample(m, gen(1))
    assert isinstance(sb, SampleBatch) and len(sb) == 64
    assert sb.masks.shape == m.shape and sb.masks.dtype == torch.float32
    assert not torch.isnan(sb.masks).any() and torch.allclose(sb.dice, dice_per_class(sb.masks, m))
    assert len(sb.names) == 64 and all(isinstance(x, str) and x for x in sb.names)
    # swap targets are exactly the Dice of the swapped-in truth
    for i, (c, nm) in enumerate(zip(sb.category, sb.names)):
        if c == "swap" and "+" not in nm:
            j = int(nm.split(":")[1])
            assert j != i and torch.allclose(sb.dice[i], dice_per_class(m[j:j + 1], m[i:i + 1])[0])
    # a wide spread of quality
    assert sb.dice.min() < 0.3 and sb.dice.max() == 1.0


def test_same_seed_same_batch() -> None:
    s = VariableQualitySampler(SamplerConfig(), 2, 1)
    m = random_discs(32)
    a, b = s.sample(m, gen(7)), s.sample(m, gen(7))
    assert torch.equal(a.masks, b.masks) and a.names == b.names and a.category == b.category
    c = s.sample(m, gen(8))
    assert not torch.equal(a.masks, c.masks)


def test_heavy_uses_high_strength() -> None:
    cfg = SamplerConfig(identity=0, single=0, chained=0, swap=0, heavy=1, catastrophic=0, blob=0, soft_fraction=0)
    light = SamplerConfig(identity=0, single=1, chained=0, swap=0, heavy=0, catastrophic=0, blob=0, soft_fraction=0)
    m = random_discs(300, size=20)
    d_heavy = VariableQualitySampler(cfg, 2, 1).sample(m, gen(0)).dice.mean()
    d_single = VariableQualitySampler(light, 2, 1).sample(m, gen(0)).dice.mean()
    assert d_heavy < d_single


def test_sample_k_and_fixed_masks() -> None:
    s = VariableQualitySampler(SamplerConfig(), 2, 1)
    m = random_discs(5)
    sk = s.sample_k(m, gen(0), 4)
    assert sk.masks.shape == (20, 1, 24, 24) and sk.dice.shape == (20, 1)
    assert torch.equal(sk.index, torch.arange(5).repeat_interleave(4))
    assert torch.allclose(sk.dice, dice_per_class(sk.masks, m.repeat_interleave(4, 0)))
    a = s.fixed_masks(m, seed=123, k=3)
    torch.manual_seed(999)
    torch.rand(10)  # global RNG state must not matter
    b = s.fixed_masks(m, seed=123, k=3)
    assert torch.equal(a.masks, b.masks) and a.names == b.names
    assert not torch.equal(a.masks, s.fixed_masks(m, seed=124, k=3).masks)


def test_swap_never_takes_a_copy_of_the_same_image() -> None:
    """sample_k repeats each truth k times; a swap must take another IMAGE's mask, not a copy."""
    only_swap = SamplerConfig(identity=0, single=0, chained=0, swap=1, heavy=0, catastrophic=0, blob=0,
                              soft_fraction=0.0)
    s = VariableQualitySampler(only_swap, 2, 1)
    m = random_discs(6, seed=3)
    m[m.sum((1, 2, 3)) == 0] = random_discs(1, seed=11)  # no empty truths: every swap must differ
    sk = s.sample_k(m, gen(0), 4)
    src = torch.tensor([int(n.split(":")[1]) for n in sk.names])
    assert (src // 4 != sk.index).all(), "a swap picked a row of its own image"
    assert torch.equal(sk.masks, m.repeat_interleave(4, 0)[src])
    assert (sk.dice < 1).all()
    # training batches drawn with replacement: rows 0 and 1 show the same image
    batch = torch.cat([m[:1], m[:1], m[1:3]])
    sb = s.sample(batch, gen(1), groups=torch.tensor([7, 7, 8, 9]))
    assert sb.names[0] != "swap:1" and sb.names[1] != "swap:0"
    # one image only: nothing to swap with, the mask is mirrored (never silently identical)
    one = s.sample_k(m[:1], gen(2), 3)
    assert one.names == ["swap:mirror"] * 3 and torch.equal(one.masks, m[:1].flip(-1).repeat(3, 1, 1, 1))


def test_weak_category_used_when_given() -> None:
    cfg = SamplerConfig(weak=0.5, soft_fraction=0.5)
    s = VariableQualitySampler(cfg, 2, 1)
    m = random_discs(40)
    weak = torch.rand(40, 3, 1, 24, 24)  # 3 soft candidate predictions per sample
    sb = s.sample(m, gen(0), weak=weak)
    rows = [i for i, c in enumerate(sb.category) if c == "weak"]
    assert len(rows) > 5
    for i in rows:
        j = int(sb.names[i].split(":")[1])
        assert torch.equal(sb.masks[i], weak[i, j])  # used as is (never softened again)
    assert "weak" not in s.sample(m, gen(0)).category  # no weak given -> redistributed
    assert s.sample_k(m[:4], gen(0), 2, weak=weak[:4]).masks.shape == (8, 1, 24, 24)


def test_soft_fraction() -> None:
    cfg = SamplerConfig(identity=1, single=0, chained=0, swap=0, heavy=0, catastrophic=0, blob=0, soft_fraction=1.0)
    sb = VariableQualitySampler(cfg, 2, 1).sample(random_discs(20), gen(0))
    assert all("+soft_" in n for n in sb.names)
    none = VariableQualitySampler(SamplerConfig(soft_fraction=0.0), 2, 1).sample(random_discs(50), gen(0))
    assert bool(((none.masks == 0) | (none.masks == 1)).all())


def test_balanced_sample_flattens() -> None:
    s = VariableQualitySampler(SamplerConfig(balance_bins=5), 2, 1)
    m = random_discs(300, size=16)
    bal = s.balanced_sample(m, gen(0), oversample=3)
    assert bal.masks.shape == m.shape and torch.equal(bal.index, torch.arange(300))
    assert torch.allclose(bal.dice, dice_per_class(bal.masks, m))
    plain = s.sample(m, gen(0))

    def spread(d: torch.Tensor) -> float:  # max bin share: lower = flatter
        h = torch.bincount((d.mean(1) * 5).long().clamp(0, 4), minlength=5).float()
        return float(h.max() / h.sum())

    assert spread(bal.dice) < spread(plain.dice)


@pytest.mark.parametrize("d3,k", [(False, 2), (True, 1), (True, 2)])
def test_multiclass_and_3d(d3: bool, k: int) -> None:
    s = VariableQualitySampler(SamplerConfig(), 3 if d3 else 2, k)
    m = random_discs(24, size=16, k=k, d3=d3)
    sb = s.sample(m, gen(0))
    assert sb.masks.shape == m.shape and sb.dice.shape == (24, k)
    assert (sb.dice >= 0).all() and (sb.dice <= 1).all() and not torch.isnan(sb.masks).any()
    with pytest.raises(ValueError):
        s.sample(m[:, :1] if k == 2 else torch.cat([m, m], 1), gen(0))


def test_batch_of_one() -> None:
    cfg = SamplerConfig(identity=0, single=0, chained=0, swap=1, heavy=0, catastrophic=0, blob=0, soft_fraction=0)
    m = random_discs(1)
    sb = VariableQualitySampler(cfg, 2, 1).sample(m, gen(0))
    assert sb.masks.shape == m.shape and sb.names == ["swap:mirror"]
