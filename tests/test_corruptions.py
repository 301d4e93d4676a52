"""Tests of the batched mask corruptions (CPU, small masks)."""
from __future__ import annotations

import math

import pytest
import torch

from qgseg.quality.corruptions import (
    CATEGORIES,
    CORRUPTIONS,
    _components,
    apply_corruption,
    chain,
    dice_per_class,
    list_corruptions,
    make_soft,
    swap_indices,
    swap_with_other,
)


def _disc(h: int, w: int, cy: float, cx: float, ry: float, rx: float | None = None) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    rx = ry if rx is None else rx
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).float()


def masks_2d() -> torch.Tensor:
    """(2, 1, 32, 32): a disc plus a small satellite blob; an ellipse."""
    a = torch.maximum(_disc(32, 32, 14, 13, 7), _disc(32, 32, 26, 26, 2.5))
    b = _disc(32, 32, 16, 17, 5, 10)
    return torch.stack([a, b])[:, None]


def masks_mc() -> torch.Tensor:
    """(2, 2, 32, 32): two structures per image."""
    m = torch.zeros(2, 2, 32, 32)
    m[0, 0], m[0, 1] = _disc(32, 32, 10, 10, 6), _disc(32, 32, 21, 20, 8, 5)
    m[1, 0], m[1, 1] = _disc(32, 32, 16, 9, 4), _disc(32, 32, 15, 22, 6)
    return m


def masks_3d() -> torch.Tensor:
    """(2, 1, 8, 24, 24): ellipsoids."""
    zz, yy, xx = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (8, 24, 24)), indexing="ij")
    a = (((zz - 3.5) / 3.5) ** 2 + ((yy - 11) / 7) ** 2 + ((xx - 12) / 6) ** 2 <= 1).float()
    b = (((zz - 4) / 3) ** 2 + ((yy - 13) / 5) ** 2 + ((xx - 10) / 8) ** 2 <= 1).float()
    return torch.stack([a, b])[:, None]


CASES = {"2d": masks_2d, "mc": masks_mc, "3d": masks_3d}


def _cases() -> list[tuple[str, str]]:
    out = []
    for case, fn in CASES.items():
        m = fn()
        for name in list_corruptions(m.dim() - 2, m.shape[1]):
            out.append((case, name))
    return out


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def is_hard(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


# ---------------------------------------------------------------------------- registry
def test_registry_covers_categories() -> None:
    cats = {c.category for c in CORRUPTIONS.values()}
    assert cats == set(CATEGORIES)
    assert len(CORRUPTIONS) >= 35
    two_d = list_corruptions(2, 1)
    assert "swap_classes" not in two_d and "drop_slices" not in two_d
    assert "swap_classes" in list_corruptions(2, 2)
    assert "drop_slices" in list_corruptions(3, 1)
    with pytest.raises(ValueError):
        apply_corruption("drop_slices", masks_2d(), gen(), 0.5)
    with pytest.raises(KeyError):
        apply_corruption("nope", masks_2d(), gen(), 0.5)


# ---------------------------------------------------------------------------- all corruptions
@pytest.mark.parametrize("case,name", _cases())
def test_output_contract_and_determinism(case: str, name: str) -> None:
    m = CASES[case]()
    out = apply_corruption(name, m, gen(0), 0.7)
    assert out.shape == m.shape and out.dtype == torch.float32 and out.device == m.device
    assert not torch.isnan(out).any()
    assert out.min() >= 0 and out.max() <= 1
    if CORRUPTIONS[name].category != "soft":
        assert is_hard(out), "hard in -> hard out"
    again = apply_corruption(name, m, gen(0), 0.7)
    assert torch.equal(out, again), "same seed must give the same output"
    # per-sample tensor strength and drawn strength work too
    assert apply_corruption(name, m, gen(1), torch.tensor([0.1, 0.9])).shape == m.shape
    assert apply_corruption(name, m, gen(1)).shape == m.shape


DETERMINISTIC = {"keep_largest", "inverted", "empty", "full", "convex_hull", "swap_classes", "closing"}


@pytest.mark.parametrize("case,name", [c for c in _cases() if c[1] not in DETERMINISTIC
                                       # tiny 3D objects: integer radii of 1-2 px leave little to randomise
                                       and not (c[0] == "3d" and CORRUPTIONS[c[1]].category == "morphology")])
def test_different_seeds_differ(case: str, name: str) -> None:
    m = CASES[case]()
    ref = apply_corruption(name, m, gen(0), 0.8)
    assert any(not torch.equal(ref, apply_corruption(name, m, gen(s), 0.8)) for s in range(1, 6))


def test_soft_input_and_empty_input_are_safe() -> None:
    soft = masks_2d() * 0.8 + 0.1
    zero = torch.zeros(2, 1, 32, 32)
    for name in list_corruptions(2, 1):
        for m in (soft, zero):
            out = apply_corruption(name, m, gen(3), 0.9)
            assert out.shape == m.shape and torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


# ---------------------------------------------------------------------------- direction of change
def _subset(a: torch.Tensor, b: torch.Tensor, tol: int = 0) -> bool:
    """a within b up to ``tol`` pixels (per sample)."""
    extra = ((a > 0.5) & (b < 0.5)).flatten(1).sum(1)
    return bool((extra <= tol).all())


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_monotone_operations(case: str, strength: float) -> None:
    m = CASES[case]()
    g = gen(5)
    shrink = ["erosion", "opening", "keep_largest", "holes", "rect_dropout", "drop_component"]
    grow = ["dilation", "closing", "bounding_box", "islands"]
    if m.dim() == 5:
        shrink.append("drop_slices")
    for name in shrink:
        assert _subset(apply_corruption(name, m, g, strength), m), name
    for name in grow:
        assert _subset(m, apply_corruption(name, m, g, strength)), name
    # discretised hull: allow a few boundary pixels
    assert _subset(m, apply_corruption("convex_hull", m, g, strength), tol=3)


def test_strength_controls_severity() -> None:
    m = masks_2d()
    for name in ("erosion", "dilation", "shift", "down_up"):
        weak = dice_per_class(apply_corruption(name, m, gen(0), 0.05), m).mean()
        strong = dice_per_class(apply_corruption(name, m, gen(0), 1.0), m).mean()
        assert strong < weak, name


def test_catastrophic_and_identity_dice() -> None:
    m = masks_2d()
    assert torch.allclose(dice_per_class(m, m), torch.ones(2, 1))
    assert torch.equal(dice_per_class(apply_corruption("empty", m, gen(), 1.0), m), torch.zeros(2, 1))
    assert (dice_per_class(apply_corruption("full", m, gen(), 1.0), m) < 0.5).all()
    assert (dice_per_class(apply_corruption("inverted", m, gen(), 1.0), m) == 0).all()
    assert (dice_per_class(apply_corruption("noise", m, gen(), 1.0), m) < 0.9).all()


def test_dice_conventions() -> None:
    z = torch.zeros(1, 2, 4, 4)
    o = torch.zeros(1, 2, 4, 4)
    o[0, 1, 1:3, 1:3] = 1
    d = dice_per_class(z, o)
    assert d[0, 0] == 1.0 and d[0, 1] == 0.0  # both empty / one empty
    half = o * 0.5
    assert torch.isclose(dice_per_class(half, o)[0, 1], torch.tensor(2 * 2 / 6.0))


def test_shape_approximations_are_plausible() -> None:
    m = masks_2d()
    ell = apply_corruption("ellipse", m[1:], gen(), 0.0)  # an ellipse fits an ellipse
    assert dice_per_class(ell, m[1:]).item() > 0.9
    poly = apply_corruption("polygon", m, gen(), 1.0)
    assert (dice_per_class(poly, m) > 0.3).all()
    box = apply_corruption("bounding_box", m[1:], gen(), 0.0)
    assert box.sum() == 11 * 21  # rows 11..21, cols 7..27


def test_components_match_expected() -> None:
    m = torch.zeros(1, 1, 20, 20)
    m[0, 0, 2:5, 2:5] = 1
    m[0, 0, 10:18, 10:12] = 1
    m[0, 0, 10, 12:18] = 1
    m[0, 0, 5, 5] = 1  # diagonal neighbour of the first square: same component (8-conn)
    lab = _components(m)
    assert len(lab[lab > 0].unique()) == 2
    kept = apply_corruption("keep_largest", m, gen(), 0.5)
    assert kept.sum() == 16 + 6 and kept[0, 0, 3, 3] == 0


def test_multiclass_ops() -> None:
    m = masks_mc()
    sw = apply_corruption("swap_classes", m, gen(), 1.0)
    assert torch.equal(sw[:, 0], m[:, 1]) and torch.equal(sw[:, 1], m[:, 0])
    dr = apply_corruption("drop_class", m, gen(), 1.0)
    assert ((dr.flatten(2).sum(2) == 0).sum(1) == 1).all()
    one = apply_corruption("corrupt_one_class", m, gen(2), 1.0)
    assert (torch.isclose(dice_per_class(one, m), torch.ones(1)).sum(1) >= 1).all()


def test_volumetric_ops() -> None:
    m = masks_3d()
    dropped = apply_corruption("drop_slices", m, gen(), 1.0)
    per_slice = dropped.sum((1, 3, 4))
    assert ((per_slice == 0) & (m.sum((1, 3, 4)) > 0)).any()
    sl = apply_corruption("corrupt_slices", m, gen(1), 1.0)
    same = (sl == m).flatten(3).all(3).squeeze(1)  # (B, D): untouched slices stay identical
    assert same.any()


def test_soft_outputs_are_probability_maps() -> None:
    m = masks_2d()
    for name in list_corruptions(2, 1, ("soft",)):
        out = apply_corruption(name, m, gen(1), 0.5)
        assert not is_hard(out) and out.min() >= 0 and out.max() <= 1
        # still agrees with the mask where it is confident
        assert dice_per_class((out > 0.5).float(), m).mean() > 0.5, name
    assert make_soft(m, gen(2)).shape == m.shape


def test_chain() -> None:
    m = masks_2d()
    out, names = chain(m, gen(4), return_names=True)
    assert out.shape == m.shape and 2 <= len(names) <= 3 and is_hard(out)
    fixed = chain(m, gen(4), names=["erosion", "shift"])
    assert torch.equal(fixed, chain(m, gen(4), names=["erosion", "shift"]))
    m3 = masks_3d()
    assert chain(m3, gen(1), n=3).shape == m3.shape


def test_swap_with_other() -> None:
    m = torch.cat([masks_2d(), masks_2d().flip(-1), masks_2d().roll(3, -2)])  # B = 6
    out, idx = swap_with_other(m, gen(0), return_index=True)
    assert (idx != torch.arange(6)).all()
    assert torch.equal(out, m[idx])
    assert torch.allclose(dice_per_class(out, m), dice_per_class(m[idx], m))
    pool = masks_mc()[:, :1]
    out_p, idx_p = swap_with_other(m, gen(0), pool=pool, return_index=True)
    assert torch.equal(out_p, pool[idx_p])
    single = swap_with_other(m[:1], gen(0))
    assert single.shape == (1, 1, 32, 32)
    # most similar area: pairs of equal-area masks pick each other's twin
    areas = m.sum((1, 2, 3))
    assert torch.allclose(areas[idx], areas)


def test_swap_indices_respects_groups() -> None:
    m = torch.cat([masks_2d(), masks_2d()])  # rows 0-1 and 2-3: the same two images twice
    groups = torch.tensor([0, 1, 0, 1])
    idx = swap_indices(m, m, gen(0), query_groups=groups, pool_groups=groups)
    assert (groups[idx] != groups).all()
    lonely = swap_indices(m[:2], m[:2], gen(0), query_groups=torch.zeros(2), pool_groups=torch.zeros(2))
    assert lonely.tolist() == [-1, -1]


def test_lesion_scale_masks() -> None:
    """Small object in a large image (crop path) behaves like the uncropped computation."""
    m = torch.zeros(2, 1, 128, 128)
    m[0, 0] = _disc(128, 128, 40, 50, 9)
    m[1, 0] = _disc(128, 128, 90, 70, 14, 8)
    for name in list_corruptions(2, 1, ("morphology", "shape", "geometry", "structure")):
        out = apply_corruption(name, m, gen(0), 0.6)
        assert out.shape == m.shape and is_hard(out)
    dil = apply_corruption("dilation", m, gen(0), 1.0)
    ero = apply_corruption("erosion", m, gen(0), 1.0)
    assert _subset(m, dil) and _subset(ero, m)
    r_big = math.sqrt(dil[0].sum() / math.pi)
    assert r_big > 10
