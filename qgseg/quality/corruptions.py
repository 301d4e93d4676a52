"""Batched, seeded mask corruptions for training the segmentation-quality predictor.

The quality predictor g(image, mask) -> Dice is trained on ground-truth masks put
through synthetic corruptions. Everything here works on whole batches of masks
shaped ``(B, K, H, W)`` or ``(B, K, D, H, W)`` (``K`` foreground channels, values
in ``[0, 1]``) with plain tensor ops, so the same code runs on CPU and CUDA:

* morphology uses separable max-pooling (square + diamond = octagonal element),
* blurs use grouped convolutions with one Gaussian kernel per sample,
* geometric / elastic / grid distortions use ``grid_sample``,
* ellipses come from image moments, convex hulls and few-sided polygons from
  support functions along N directions (intersected row by row),
* connected components come from max-pool label propagation with pointer jumping.

All randomness is drawn from an explicit ``torch.Generator`` (on the generator's
device, then moved), so a corruption is reproducible from a seed and identical
on CPU and CUDA for the same CPU generator. ``strength`` in ``[0, 1]`` (scalar or
one value per sample) sets the severity; sizes are relative to each object's
equivalent radius so small lesions and big organs get comparable Dice spreads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Strength = float | Tensor
CorruptionFn = Callable[[Tensor, torch.Generator, Strength], Tensor]

CATEGORIES: tuple[str, ...] = (
    "morphology", "shape", "boundary", "structure", "geometry", "blob",
    "catastrophic", "multiclass", "volumetric", "resolution", "soft",
)


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Additions to the brief: ``requires_3d`` marks the volumetric ones that only make sense
    on ``(B, K, D, H, W)`` input; ``local`` marks those whose output stays within about one
    object size of the input foreground, so :func:`apply_corruption` may run them on a crop.
    """

    name: str
    category: str
    fn: CorruptionFn
    supports_3d: bool = True
    needs_multiclass: bool = False
    requires_3d: bool = False
    local: bool = False

    def __call__(self, masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
        return self.fn(masks, gen, strength)

    def applicable(self, spatial_dims: int, num_classes: int) -> bool:
        """Whether this corruption can run on masks with these dims / channels."""
        if spatial_dims == 3 and not self.supports_3d:
            return False
        if spatial_dims != 3 and self.requires_3d:
            return False
        return not (self.needs_multiclass and num_classes < 2)


CORRUPTIONS: dict[str, Corruption] = {}


def _register(name: str, category: str, *, supports_3d: bool = True, needs_multiclass: bool = False,
              requires_3d: bool = False, local: bool = False) -> Callable[[CorruptionFn], CorruptionFn]:
    assert category in CATEGORIES, category

    def deco(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = Corruption(name, category, fn, supports_3d, needs_multiclass, requires_3d, local)
        return fn

    return deco


# --------------------------------------------------------------------------------------
# Random helpers: draw on the generator's device, then move (keeps CPU/CUDA identical).
# --------------------------------------------------------------------------------------
def _rand(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    return torch.rand(tuple(shape), generator=gen, device=gen.device).to(device)


def _randn(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    return torch.randn(tuple(shape), generator=gen, device=gen.device).to(device)


def _uniform(gen: torch.Generator, shape: Sequence[int], lo: float, hi: float, device: torch.device) -> Tensor:
    return lo + (hi - lo) * _rand(gen, shape, device)


def _randint(gen: torch.Generator, high: int | Tensor, shape: Sequence[int], device: torch.device) -> Tensor:
    """Integers in ``[0, high)``; ``high`` may be a per-row tensor."""
    u = _rand(gen, shape, device)
    h = high if isinstance(high, Tensor) else torch.tensor(float(high), device=device)
    return (u * h).floor().long().clamp(min=0).minimum((h - 1).long().clamp(min=0))


def _sign(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    return torch.where(_rand(gen, shape, device) < 0.5, -1.0, 1.0)


def _pick(gen: torch.Generator, items: Sequence[str]) -> str:
    return items[int(torch.randint(len(items), (1,), generator=gen, device=gen.device))]


def _strength(strength: Strength, n: int, device: torch.device) -> Tensor:
    """Per-sample strengths ``(n,)`` in ``[0, 1]`` from a scalar or tensor."""
    s = torch.as_tensor(strength, dtype=torch.float32).to(device)
    s = s.expand(n) if s.dim() == 0 else s.reshape(-1)
    if s.numel() != n:
        raise ValueError(f"strength has {s.numel()} values for a batch of {n}")
    return s.clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------
# Shape helpers
# --------------------------------------------------------------------------------------
def _sdims(x: Tensor) -> int:
    return x.dim() - 2


def _is_hard(x: Tensor) -> bool:
    return torch.equal(x, x.round())


def _any(x: Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> Tensor:
    """``x.any(dim)`` for bool ``x``. Why: on CPU, bool ``any`` is not vectorised and is 3-7x
    slower than ``amax`` (identical result on bool); ``amax`` rejects empty inputs."""
    if x.device.type == "cpu" and x.numel():
        return x.amax(dim, keepdim=keepdim)
    return x.any(dim, keepdim=keepdim)


def _all(x: Tensor, dim: int) -> Tensor:
    """``x.all(dim)`` for bool ``x`` (``amin`` on CPU, see :func:`_any`)."""
    return x.amin(dim) if x.device.type == "cpu" and x.numel() else x.all(dim)


def _union(x: Tensor) -> Tensor:
    """Max over the batch and channel dims: (N, C, *sp) -> (*sp).

    Why not ``amax((0, 1))``: a reduction over size-1 dims takes a slow path (2.5x slower
    than this for one mask); a single mask is just viewed.
    """
    sp = x.shape[2:]
    return x.reshape(sp) if x.shape[0] * x.shape[1] == 1 else x.reshape(-1, *sp).amax(0)


def _bbox(fg: Tensor) -> list[tuple[int, int]] | None:
    """Inclusive (first, last) index per axis of the True pixels of ``fg`` (spatial bool), None if empty."""
    d = fg.dim()
    fg = fg.to(torch.uint8)  # uint8 max is ~2x faster than bool max on CPU (see _any)
    occ = [(fg.amax(tuple(i for i in range(d) if i != ax)) if d > 1 else fg) for ax in range(d)]
    flat = torch.cat(occ).tolist()  # one host transfer for all axes
    out, start = [], 0
    for n in fg.shape:
        row = flat[start:start + n]
        start += n
        if 1 not in row:
            return None
        out.append((row.index(1), n - 1 - row[::-1].index(1)))
    return out


def _fold_channels(x: Tensor) -> Tensor:
    """(B, K, *sp) -> (B*K, 1, *sp): lets per-object ops treat each class separately."""
    return x.reshape(x.shape[0] * x.shape[1], 1, *x.shape[2:])


def _fold_slices(x: Tensor) -> Tensor:
    """(B, K, D, H, W) -> (B*D, K, H, W) for slice-wise 2D operations."""
    b, k, d, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * d, k, h, w)


def _unfold_slices(y: Tensor, b: int, d: int) -> Tensor:
    k, h, w = y.shape[1:]
    return y.reshape(b, d, k, h, w).permute(0, 2, 1, 3, 4).contiguous()


def _coords(spatial: Sequence[int], device: torch.device) -> list[Tensor]:
    """Per-axis float coordinates, each broadcastable to ``spatial``."""
    out = []
    for i, n in enumerate(spatial):
        shape = [1] * len(spatial)
        shape[i] = n
        out.append(torch.arange(n, device=device, dtype=torch.float32).view(shape))
    return out


def _fg_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Area ``(N, C)``, centroid ``(N, C, d)`` (image centre when empty), equivalent radius ``(N, C)``."""
    sp = x.shape[2:]
    d = len(sp)
    # per-axis marginal sums, then small dot products with the coordinates: two passes over
    # x in 2D instead of five (x * coordinate temporaries); exact on hard masks
    marg = [x.sum(tuple(2 + j for j in range(d) if j != i)) if d > 1 else x for i in range(d)]  # (N, C, L_i)
    area = marg[0].sum(-1)
    safe = area.clamp_min(1e-6)
    cents = []
    for i, m in enumerate(marg):
        ci = (m @ torch.arange(sp[i], device=x.device, dtype=x.dtype)) / safe
        cents.append(torch.where(area > 0, ci, torch.full_like(ci, (sp[i] - 1) / 2)))
    cent = torch.stack(cents, -1)
    req = (area / math.pi).sqrt() if d == 2 else (3 * area / (4 * math.pi)).pow(1 / 3)
    return area, cent, req


def _bview(t: Tensor, d: int) -> Tensor:
    """(N,) or (N, C) -> broadcastable against (N, C, *sp)."""
    if t.dim() == 1:
        t = t[:, None]
    return t.reshape(*t.shape, *([1] * d))


def _window_max(x: Tensor, axis: int, r: int) -> Tensor:
    """Max over ``[i - r, i + r]`` along spatial ``axis`` (outside counts as 0).

    Why not max_pool: PyTorch's CPU max_pool with stride 1 is ~10x slower than shifted
    maxima; log-doubling makes the cost O(log r) elementwise maxima for any window.
    """
    if r <= 0:
        return x
    dim = 2 + axis
    n = x.shape[dim]
    zshape = list(x.shape)
    zshape[dim] = r
    z = x.new_zeros(zshape)
    p = torch.cat([z, x, z], dim)
    length, w, m = 2 * r + 1, 1, p
    while 2 * w <= length:
        m = torch.maximum(m.narrow(dim, 0, m.shape[dim] - w), m.narrow(dim, w, m.shape[dim] - w))
        w *= 2
    # m[i] = max p[i : i + w] with w >= length / 2: two overlapping windows cover the span
    return torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, length - w, n))


def _square_max(x: Tensor, r: int) -> Tensor:
    """Max over a (2r+1)^d box (separable)."""
    for ax in range(_sdims(x)):
        x = _window_max(x, ax, r)
    return x


def _dilate(x: Tensor, r: int) -> Tensor:
    """Grey dilation with an octagon/octahedron-like element of radius ``r``.

    Why: a square element (one max_pool) gives boxy artefacts the predictor could learn
    to spot; square(a) (+) diamond(b) with b ~ 1.41a approximates a disc at O(r) cost.
    """
    if r <= 0:
        return x
    a = int(round(r * 0.414))
    b = r - a
    d = _sdims(x)
    x = _square_max(x, a)
    for _ in range(b):  # diamond = b steps of the cross element
        y = x
        for ax in range(d):
            y = torch.maximum(y, _window_max(x, ax, 1))
        x = y
    return x


def _morph_op(x: Tensor, r: int, kind: str, hard: bool) -> Tensor:
    """Erosion/dilation/opening/closing with radius ``r``; radii > 8 run at reduced
    resolution (factor ceil(r/8)): boundary error ~factor/2 px on a shift of r px."""
    f = max(1, math.ceil(r / 8))
    sp = x.shape[2:]
    if f > 1 and min(sp) >= 4 * f:
        pool = F.avg_pool2d if len(sp) == 2 else F.avg_pool3d
        y = _morph_op(pool(x, f, f, ceil_mode=True), max(1, round(r / f)), kind, hard=False)
        y = F.interpolate(y, size=tuple(sp), mode="bilinear" if len(sp) == 2 else "trilinear", align_corners=False)
        return (y >= 0.5).float() if hard else y.clamp(0, 1)
    if kind == "erosion":
        return _erode(x, r)
    if kind == "dilation":
        return _dilate(x, r)
    if kind == "opening":
        return _dilate(_erode(x, r), r)
    return _erode(_dilate(x, r), r)


def _erode(x: Tensor, r: int) -> Tensor:
    return 1.0 - _dilate(1.0 - x, r)


def _grouped(x: Tensor, keys: Tensor, fn: Callable[[Tensor, int], Tensor]) -> Tensor:
    """Apply ``fn(x_subset, key)`` per unique integer key (few unique values: radii, factors)."""
    uniq = torch.unique(keys).tolist()
    if len(uniq) == 1:
        return fn(x, int(uniq[0]))
    out = torch.empty_like(x)
    for k in uniq:
        idx = (keys == k).nonzero().squeeze(1)
        out[idx] = fn(x[idx], int(k))
    return out


_BAND_MAX = 512  # longest padded axis blurred by a band-matrix product (memory N * L^2)


def _band_correlate(yp: Tensor, kk: Tensor, ax: int) -> Tensor:
    """Valid correlation of padded ``yp`` (1, N, *sp) along spatial ``ax`` with one kernel per
    channel ``kk`` (N, T), as a product with the (L, L + T - 1) band matrix of each kernel.

    Why: on CPU PyTorch's grouped convolution with one-channel 1D kernels runs 4-5x slower than
    one batched GEMM (same products, measured identical on lesion masks); on CUDA it is a GEMM too.
    """
    nch, taps = kk.shape
    shp = yp.shape[2:]
    lp = shp[ax]
    length = lp - taps + 1
    a, r = math.prod(shp[:ax]), math.prod(shp[ax + 1:])
    cols = torch.arange(length, device=yp.device)[:, None] + torch.arange(taps, device=yp.device)[None]
    band = kk.new_zeros(nch, length, lp).scatter_(2, cols.expand(nch, -1, -1), kk[:, None].expand(-1, length, -1))
    if r == 1:  # last axis: rows of yp times the transposed band
        out = torch.bmm(yp.reshape(nch, a, lp), band.transpose(1, 2))
    else:
        out = torch.matmul(band[:, None], yp.reshape(nch, a, lp, r))
    return out.reshape(1, nch, *shp[:ax], length, *shp[ax + 1:])


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma (in pixels) per sample; ``x`` is (N, C, *sp).

    Large sigmas are handled at reduced resolution (avg-pool, blur, upsample) so the
    kernel never exceeds ~25 taps: cost stays bounded whatever the object size.
    """
    n, c = x.shape[:2]
    sp = x.shape[2:]
    d = len(sp)
    sigma = sigma.to(x.device, torch.float32).reshape(n)
    smax = float(sigma.max()) if n else 0.0
    if smax < 0.25:
        return x
    f = max(1, int(smax // 4))
    f = min(f, max(1, min(sp) // 4))
    xs = x
    if f > 1:
        pool = F.avg_pool2d if d == 2 else F.avg_pool3d
        xs = pool(x, f, f, ceil_mode=True)
    sig = (sigma / f).clamp_min(1e-3)
    rad = max(1, int(math.ceil(3 * float(sig.max()))))
    rad = min(rad, max(xs.shape[2:]) - 1) if max(xs.shape[2:]) > 1 else 1
    t = torch.arange(-rad, rad + 1, device=x.device, dtype=torch.float32)
    kern = torch.exp(-0.5 * (t[None] / sig[:, None]) ** 2)
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 2rad+1)
    y = xs.reshape(1, n * c, *xs.shape[2:])
    conv = F.conv2d if d == 2 else F.conv3d
    for ax in range(d):
        if y.shape[2 + ax] == 1:
            continue
        r_ax = min(rad, y.shape[2 + ax] - 1)
        kk = kern[:, rad - r_ax: rad + r_ax + 1]
        wshape = [n * c, 1] + [1] * d
        wshape[2 + ax] = 2 * r_ax + 1
        pad = [0] * (2 * d)
        pad[2 * (d - 1 - ax)] = pad[2 * (d - 1 - ax) + 1] = r_ax  # F.pad order: last dim first
        # replicate padding: a mask touching the border should not fade there
        yp = F.pad(y, pad, mode="replicate")
        if yp.shape[2 + ax] <= _BAND_MAX:
            y = _band_correlate(yp, kk, ax)
        else:
            y = conv(yp, kk.reshape(wshape), groups=n * c)
    y = y.reshape(n, c, *xs.shape[2:])
    if f > 1:
        y = F.interpolate(y, size=tuple(sp), mode="bilinear" if d == 2 else "trilinear", align_corners=False)
    return y


def _lowfreq_noise(gen: torch.Generator, shape: Sequence[int], cell: Tensor | float, device: torch.device) -> Tensor:
    """Smooth unit-variance noise ``(N, C, *sp)`` with correlation length ``cell`` pixels per sample."""
    n, c = shape[:2]
    sp = list(shape[2:])
    f = 4 if min(sp) >= 16 else 1  # draw at quarter resolution: 16x fewer pixels to blur
    low = [max(2, s // f) for s in sp]
    z = _randn(gen, (n, c, *low), device)
    cell_t = torch.as_tensor(cell, dtype=torch.float32).to(device).expand(n)
    z = _gaussian_blur(z, (cell_t / f).clamp(0.3, max(low) / 3))
    z = z / z.flatten(1).std(1).clamp_min(1e-6).reshape(n, *([1] * (len(sp) + 1)))
    if f > 1:
        z = F.interpolate(z, size=tuple(sp), mode="bilinear" if len(sp) == 2 else "trilinear", align_corners=False)
    return z


def _warp(x: Tensor, src: Tensor, hard: bool) -> Tensor:
    """Sample ``x`` (B, K, *sp) at pixel coordinates ``src`` (B, d, *sp); outside is background."""
    sp = x.shape[2:]
    d = len(sp)
    gs = []
    for i in reversed(range(d)):  # grid_sample wants (x, y[, z]) = reversed axis order
        n = sp[i]
        gs.append(src[:, i] * (2.0 / (n - 1)) - 1.0 if n > 1 else torch.zeros_like(src[:, i]))
    grid = torch.stack(gs, -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return (out >= 0.5).float() if hard else out


def _base_coords(sp: Sequence[int], device: torch.device) -> Tensor:
    """(d, *sp) pixel coordinates."""
    return torch.stack(torch.meshgrid(*[torch.arange(n, device=device, dtype=torch.float32) for n in sp],
                                      indexing="ij"), 0)


def _warp_affine(x: Tensor, mat: Tensor, shift: Tensor, center: Tensor, hard: bool) -> Tensor:
    """Forward map q -> A (q - c) + c + t; sampled via its inverse. ``mat`` (B,d,d), others (B,d)."""
    sp = x.shape[2:]
    d = len(sp)
    base = _base_coords(sp, x.device).reshape(1, d, -1)  # (1, d, P)
    inv = torch.linalg.inv(mat)
    rel = base - (center + shift)[:, :, None]
    src = torch.bmm(inv, rel.expand(x.shape[0], -1, -1)) + center[:, :, None]
    return _warp(x, src.reshape(x.shape[0], d, *sp), hard)


def _topk_mask(field: Tensor, k: Tensor) -> Tensor:
    """Binary mask of the ``k[n]`` largest values of ``field[n]`` (N, 1, *sp)."""
    n = field.shape[0]
    flat = field.reshape(n, -1)
    p = flat.shape[1]
    kk = k.long().clamp(1, p)
    kmax = int(kk.max()) if n else 1
    if kmax * 32 < p:
        # few pixels (objects cover a small part of the image): a partial sort is cheapest
        top = flat.topk(kmax, dim=1, sorted=True).values
        thr = top.gather(1, (kk - 1)[:, None])
    else:
        # large k (noise covering up to half the image): O(P) selection of the same k-th largest
        # value per row is several times faster than sorting k values
        thr = torch.stack([flat[i].kthvalue(p - ki + 1).values for i, ki in enumerate(kk.tolist())])[:, None]
    out = (flat >= thr) & (k[:, None] > 0)
    return out.float().reshape(field.shape)


def _sample_points(weights: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` flat indices per row drawn proportionally to ``weights`` (N, P) via inverse CDF.

    Why not torch.multinomial: it needs the generator on the data's device; this works with a
    CPU generator for CUDA data. Rows with zero weight fall back to uniform.
    """
    w = weights.clamp_min(0) + 1e-12
    cdf = w.cumsum(1)
    cdf = cdf / cdf[:, -1:]
    u = _rand(gen, (w.shape[0], n), w.device)
    return torch.searchsorted(cdf, u).clamp(max=w.shape[1] - 1)


def _unravel(idx: Tensor, sp: Sequence[int]) -> Tensor:
    """Flat indices (...) -> float coordinates (..., d)."""
    out = []
    for n in reversed(sp):
        out.append(idx % n)
        idx = idx // n
    return torch.stack(list(reversed(out)), -1).float()


def _ellipsoids(sp: Sequence[int], centers: Tensor, radii: Tensor, valid: Tensor) -> Tensor:
    """Union of axis-aligned ellipsoids: centers/radii (N, n, d), valid (N, n) -> (N, 1, *sp) bool."""
    d = len(sp)
    dist = 0.0
    for i, c in enumerate(_coords(sp, centers.device)):
        ci = centers[..., i].reshape(*centers.shape[:2], *([1] * d))
        ri = radii[..., i].clamp_min(0.5).reshape(*centers.shape[:2], *([1] * d))
        dist = dist + ((c - ci) / ri) ** 2
    inside = (dist <= 1.0) & valid.reshape(*valid.shape, *([1] * d))
    return _any(inside, 1, keepdim=True)


def _boxes(sp: Sequence[int], centers: Tensor, half: Tensor, valid: Tensor) -> Tensor:
    """Union of axis-aligned boxes, same conventions as :func:`_ellipsoids`."""
    d = len(sp)
    inside = valid.reshape(*valid.shape, *([1] * d))
    for i, c in enumerate(_coords(sp, centers.device)):
        ci = centers[..., i].reshape(*centers.shape[:2], *([1] * d))
        hi = half[..., i].reshape(*centers.shape[:2], *([1] * d))
        inside = inside & ((c - ci).abs() <= hi)
    return _any(inside, 1, keepdim=True)


def _label_cpu(xc: Tensor) -> Tensor:
    """Labels of :func:`_components` for a CPU bool crop (N, 1, *sub): scipy's C labelling
    (8/26-connectivity within each sample, none across samples), then each component is
    renamed to its largest 1-based flat index, i.e. exactly the propagation's fixed point."""
    import numpy as np
    from scipy import ndimage

    n, sub = xc.shape[0], xc.shape[2:]
    struct = np.zeros((3,) * (len(sub) + 1), dtype=bool)
    struct[1] = True
    lab_np, num = ndimage.label(xc.reshape(n, *sub).numpy(), structure=struct)
    lab = torch.from_numpy(lab_np).reshape(n, -1).long()
    idx = torch.arange(1, lab.shape[1] + 1).expand(n, -1)
    table = torch.zeros(num + 1, dtype=torch.long).scatter_reduce_(0, lab.reshape(-1), idx.reshape(-1), "amax")
    table[0] = 0
    return table[lab].reshape(xc.shape)


def _components(x: Tensor, max_iter: int = 64) -> Tensor:
    """Connected-component labels (N, 1, *sp) long (0 = background, 8/26-connectivity).

    Each component is labelled with the 1-based flat index (in the crop below) of its last
    pixel. On CUDA: max-pool label propagation plus two pointer jumps per step (a label is the
    index of a pixel of the same component, so reading that pixel's label is a valid shortcut):
    long thin structures converge in ~log steps instead of one step per pixel; ``max_iter``
    caps pathological spirals (a component not converged by then may be split in two). On CPU
    the same labels come from scipy's labelling (about 10x faster, ~9 propagation steps on
    lesions; it never splits a spiral). Work happens on the union bounding box of the batch.
    """
    xb = x > 0.5
    out = torch.zeros(xb.shape, dtype=torch.long, device=x.device)
    box = _bbox(_union(xb.to(torch.uint8)))
    if box is None:
        return out
    sl = [slice(lo, hi + 1) for lo, hi in box]
    xc = xb[(slice(None), slice(None), *sl)]
    lab = _label_cpu(xc) if xc.device.type == "cpu" else _label_propagate(xc, max_iter)
    out[(slice(None), slice(None), *sl)] = lab
    return out


def _label_propagate(xc: Tensor, max_iter: int) -> Tensor:
    """Labels of :func:`_components` for a bool crop (N, 1, *sub) by label propagation (any device)."""
    n, sub = xc.shape[0], xc.shape[2:]
    p = math.prod(sub)
    fg = xc.float()
    idx = torch.arange(1, p + 1, device=xc.device, dtype=torch.float32).reshape(1, 1, *sub)
    lab = idx * fg
    for _ in range(max_iter):
        new = (_square_max(lab, 1) * fg).reshape(n, p)
        for _ in range(2):
            j = (new.long() - 1).clamp(min=0)
            new = torch.maximum(new, new.gather(1, j) * (new > 0))
        new = new.reshape(lab.shape)
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


def _component_counts(lab: Tensor) -> Tensor:
    """(N, M+1) pixel counts per label, M the largest label (column 0 = background, zeroed).

    Why not P+1 columns: labels never exceed the components' bounding box, usually a small part
    of the crop; the columns beyond M would all be 0 (same argmax / cumsum results)."""
    n = lab.shape[0]
    flat = lab.reshape(n, -1)
    m = int(flat.max()) if flat.numel() else 0
    counts = torch.zeros(n, m + 1, device=lab.device, dtype=torch.float32)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    counts[:, 0] = 0
    return counts


def _slicewise(fn: Callable[[Tensor, torch.Generator, Tensor], Tensor]) -> Callable[[Tensor, torch.Generator, Strength], Tensor]:
    """Wrap a 2D op so that 3D input is processed slice by slice (D folded into the batch)."""

    def wrapped(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
        b = masks.shape[0]
        s = _strength(strength, b, masks.device)
        if _sdims(masks) == 2:
            return fn(masks, gen, s)
        d = masks.shape[2]
        y = fn(_fold_slices(masks), gen, s.repeat_interleave(d))
        return _unfold_slices(y, b, d)

    wrapped.__doc__ = fn.__doc__
    return wrapped


# --------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------
def dice_per_class(pred: Tensor, truth: Tensor, eps: float = 1e-6) -> Tensor:
    """Soft Dice 2|P.T| / (|P| + |T|) per sample and class, shape (B, K).

    Both empty -> 1.0; exactly one empty -> 0.0 (the intersection is then 0).
    """
    p, t = pred.float().flatten(2), truth.float().flatten(2)
    # einsum (batched dot products): no (B, K, *sp) product temporary, ~1.5x faster; exact on
    # hard masks, ~1e-7 apart from the elementwise sum on soft ones
    inter = torch.einsum("bkp,bkp->bk", p, t)
    denom = p.sum(-1) + t.sum(-1)
    return torch.where(denom > eps, 2 * inter / denom.clamp_min(eps), torch.ones_like(denom)).clamp(0, 1)


# --------------------------------------------------------------------------------------
# Morphology
# --------------------------------------------------------------------------------------
def _morph_radii(x: Tensor, s: Tensor, gen: torch.Generator, lo: float, hi: float) -> Tensor:
    """Per-channel radius: a fraction (lo..hi by strength, jittered) of the equivalent radius."""
    _, _, req = _fg_stats(x)
    req = req.reshape(-1)
    jitter = _uniform(gen, (req.shape[0],), 0.5, 1.0, x.device)
    frac = lo + (hi - lo) * s * jitter
    rmax = max(1, min(x.shape[2:]) // 4)
    return (frac * req).round().clamp(1, rmax).long()


def _make_morph(kind: str) -> CorruptionFn:
    lo, hi = (0.05, 0.55) if kind in ("erosion", "dilation") else (0.1, 0.9)

    def fn(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
        b, k = masks.shape[:2]
        s = _strength(strength, b, masks.device).repeat_interleave(k)
        x = _fold_channels(masks)
        radii = _morph_radii(x, s, gen, lo, hi)
        hard = _is_hard(x)
        out = _grouped(x, radii, lambda xx, r: _morph_op(xx, r, kind, hard))
        if kind in ("erosion", "opening"):  # exact guarantee despite the reduced-resolution path
            out = torch.minimum(out, x)
        elif kind == "dilation":
            out = torch.maximum(out, x)
        return out.reshape(masks.shape)

    fn.__doc__ = f"{kind.capitalize()} with a disc-like element whose radius grows with strength."
    return fn


for _kind in ("erosion", "dilation", "opening", "closing"):
    _register(_kind, "morphology", local=True)(_make_morph(_kind))


# --------------------------------------------------------------------------------------
# Shape approximations
# --------------------------------------------------------------------------------------
@_register("ellipse", "shape", local=True)
@_slicewise
def ellipse(masks: Tensor, gen: torch.Generator, s: Tensor) -> Tensor:
    """Ellipse with the same second moments as each object, scaled by up to +/-35% with strength."""
    b, k = masks.shape[:2]
    x = (_fold_channels(masks) > 0.5).float()
    area, cent, _ = _fg_stats(x)
    yy, xx = _coords(x.shape[2:], x.device)
    dims = (2, 3)
    safe = area.clamp_min(1e-6)
    dy = yy - _bview(cent[..., 0], 2)
    dx = xx - _bview(cent[..., 1], 2)
    # + 1/12: variance of a unit pixel, keeps 1-pixel-thin objects invertible
    syy = (x * dy * dy).sum(dims) / safe + 1 / 12
    sxx = (x * dx * dx).sum(dims) / safe + 1 / 12
    sxy = (x * dy * dx).sum(dims) / safe
    det = (syy * sxx - sxy ** 2).clamp_min(1e-6)
    scale = 1 + s.repeat_interleave(k) * _uniform(gen, (b * k,), -0.35, 0.35, x.device)
    q = (_bview(sxx, 2) * dy * dy - 2 * _bview(sxy, 2) * dy * dx + _bview(syy, 2) * dx * dx) / _bview(det, 2)
    # uniform ellipse with semi-axis a has variance a^2/4 along it -> inside iff q <= 4
    inside = (q <= 4 * _bview(scale[:, None] ** 2, 2)) & _bview(area > 0, 2)
    return inside.float().reshape(masks.shape)


def _support_polygon(x: Tensor, ang: Tensor, valid: Tensor, shrink: Tensor | None = None) -> Tensor:
    """Intersection of half-planes u_j . p <= h_j with h_j the support function of the object.

    ``x`` (N, 1, H, W) binary, ``ang`` (N, M) directions, ``valid`` (N, M). Support values come
    from the leftmost/rightmost pixel of each row (2H candidates instead of H*W), and the
    polygon is rasterised as one x-interval per row, so memory is O(N*M*H), not O(N*M*H*W).
    ``shrink`` (N,) < 1 pulls the half-planes towards the centroid. Without shrink every
    object pixel is inside (its projection is <= the max by construction).
    """
    h, w = x.shape[2:]
    dev = x.device
    fg = x[:, 0] > 0.5  # (N, H, W)
    xs = torch.arange(w, device=dev, dtype=torch.float32)
    ys = torch.arange(h, device=dev, dtype=torch.float32)
    rowany = _any(fg, 2)  # (N, H)
    xl = torch.where(fg, xs, torch.full_like(xs, float(w))).amin(2)
    xr = torch.where(fg, xs, torch.full_like(xs, -1.0)).amax(2)
    xl = torch.where(rowany, xl, torch.zeros_like(xl))
    xr = torch.where(rowany, xr, torch.zeros_like(xr))
    ux, uy = torch.cos(ang)[..., None], torch.sin(ang)[..., None]  # (N, M, 1)
    proj = torch.maximum(ux * xl[:, None] + uy * ys, ux * xr[:, None] + uy * ys)  # (N, M, H)
    proj = torch.where(rowany[:, None], proj, torch.full_like(proj, -math.inf))
    hsup = proj.amax(2, keepdim=True)  # (N, M, 1)
    if shrink is not None:
        _, cent, _ = _fg_stats(x.float())
        cproj = ux * cent[:, 0, 1, None, None] + uy * cent[:, 0, 0, None, None]
        hsup = cproj + (hsup - cproj) * shrink[:, None, None]
    rhs = hsup - uy * ys  # constraint ux * x <= rhs, per row
    pos, neg = ux > 1e-6, ux < -1e-6
    big = float(4 * (w + h))
    ub = torch.where(pos, rhs / torch.where(pos, ux, torch.ones_like(ux)), torch.full_like(rhs, big))
    lb = torch.where(neg, rhs / torch.where(neg, ux, torch.ones_like(ux)), torch.full_like(rhs, -big))
    rowok = torch.where(pos | neg, torch.ones_like(rhs, dtype=torch.bool), rhs >= -1e-3)
    v = valid[..., None]
    ub = torch.where(v, ub, torch.full_like(ub, big))
    lb = torch.where(v, lb, torch.full_like(lb, -big))
    rowok = rowok | ~v
    hi, lo, ok = ub.amin(1), lb.amax(1), _all(rowok, 1)  # (N, H)
    inside = (xs >= lo[..., None] - 1e-3) & (xs <= hi[..., None] + 1e-3) & ok[..., None]
    inside = inside & _any(fg.flatten(1), 1)[:, None, None]
    return inside[:, None].float()


@_register("polygon", "shape", local=True)
@_slicewise
def polygon(masks: Tensor, gen: torch.Generator, s: Tensor) -> Tensor:
    """Circumscribed polygon with 8 (weak) down to 3 (strong) sides, randomly rotated, slightly shrunk."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n = x.shape[0]
    ss = s.repeat_interleave(k)
    sides = (8 - (ss * 5 * _uniform(gen, (n,), 0.6, 1.0, x.device)).round()).clamp(3, 8)
    j = torch.arange(8, device=x.device, dtype=torch.float32)
    ang = _uniform(gen, (n, 1), 0, 2 * math.pi, x.device) + 2 * math.pi * j / sides[:, None]
    shrink = 1 - 0.2 * ss * _rand(gen, (n,), x.device)
    return _support_polygon(x, ang, j < sides[:, None], shrink).reshape(masks.shape)


@_register("convex_hull", "shape", local=True)
@_slicewise
def convex_hull(masks: Tensor, gen: torch.Generator, s: Tensor) -> Tensor:
    """Convex hull approximated by 64 support half-planes (always contains the object)."""
    x = _fold_channels(masks)
    m = 64
    off = _uniform(gen, (x.shape[0], 1), 0, 2 * math.pi / m, x.device)
    ang = off + 2 * math.pi * torch.arange(m, device=x.device, dtype=torch.float32) / m
    return _support_polygon(x, ang, torch.ones_like(ang, dtype=torch.bool)).reshape(masks.shape)


@_register("bounding_box", "shape", local=True)
def bounding_box(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Axis-aligned bounding box (2D or 3D), enlarged by up to 20% of the extent with strength."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks) > 0.5
    n = x.shape[0]
    sp = x.shape[2:]
    d = len(sp)
    s = _strength(strength, b, masks.device).repeat_interleave(k)
    inside = _any(x.flatten(1), 1).reshape(n, 1, *([1] * d))
    for ax, c in enumerate(_coords(sp, x.device)):
        other = tuple(i + 2 for i in range(d) if i != ax)
        occ = _any(x[:, 0], tuple(o - 1 for o in other)) if other else x[:, 0]  # (N, L)
        L = sp[ax]
        ar = torch.arange(L, device=x.device, dtype=torch.float32)
        first = torch.where(occ, ar, torch.full_like(ar, float(L))).amin(1)
        last = torch.where(occ, ar, torch.full_like(ar, -1.0)).amax(1)
        margin = (s * 0.2 * (last - first + 1).clamp_min(0) * _rand(gen, (n,), x.device)).round()
        lo = _bview(first - margin, d)
        hi = _bview(last + margin, d)
        inside = inside & (c >= lo) & (c <= hi)
    return inside.float().reshape(masks.shape)


# --------------------------------------------------------------------------------------
# Boundary
# --------------------------------------------------------------------------------------
@_register("jagged_band", "boundary", local=True)
def jagged_band(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Random (2-pixel-correlated) flips inside a band around the boundary; band width and
    flip rate grow with strength."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    hard = _is_hard(x)
    s = _strength(strength, b, masks.device).repeat_interleave(k)
    _, _, req = _fg_stats(x)
    width = (1 + s * 0.3 * req.reshape(-1)).round().clamp(1, max(1, min(x.shape[2:]) // 8)).long()
    band = _grouped(x, width, lambda xx, r: _morph_op(xx, r, "dilation", hard) - _morph_op(xx, r, "erosion", hard))
    sp = x.shape[2:]
    low = [max(1, n // 2) for n in sp]
    noise = _rand(gen, (x.shape[0], 1, *low), x.device)
    noise = F.interpolate(noise, size=tuple(sp), mode="nearest")
    p = _bview(0.15 + 0.35 * s, len(sp))
    flip = (noise < p) & (band > 0.5)
    out = torch.where(flip, 1.0 - x, x)
    return (out >= 0.5).float().reshape(masks.shape) if hard else out.reshape(masks.shape)


@_register("smooth", "boundary", local=True)
def smooth(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Blur-and-threshold: rounds corners, removes thin parts; threshold jitter grows/shrinks."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    hard = _is_hard(x)
    s = _strength(strength, b, masks.device).repeat_interleave(k)
    _, _, req = _fg_stats(x)
    sigma = (0.7 + s * 0.6 * req.reshape(-1) * _uniform(gen, (x.shape[0],), 0.5, 1.0, x.device))
    y = _gaussian_blur(x, sigma)
    thr = _bview(0.5 + 0.2 * s * _uniform(gen, (x.shape[0],), -1, 1, x.device), _sdims(x))
    out = (y >= thr).float() if hard else torch.clamp(0.5 + (y - thr), 0, 1) * (y > 1e-3)
    return out.reshape(masks.shape)


def _object_scale(masks: Tensor) -> tuple[Tensor, Tensor]:
    """Centroid (B, d) and equivalent radius (B,) of the union of all channels (min 2 px)."""
    u = masks.amax(1, keepdim=True)
    _, cent, req = _fg_stats(u)
    return cent[:, 0], req[:, 0].clamp_min(2.0)


@_register("elastic", "boundary", local=True)
def elastic(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Smooth random displacement field; correlation length ~ half the object radius,
    amplitude up to ~40% of it."""
    b = masks.shape[0]
    sp = masks.shape[2:]
    d = len(sp)
    s = _strength(strength, b, masks.device)
    _, req = _object_scale(masks)
    field = _lowfreq_noise(gen, (b, d, *sp), 0.5 * req, masks.device)
    alpha = 0.5 + s * 0.4 * req * _uniform(gen, (b,), 0.5, 1.0, masks.device)
    src = _base_coords(sp, masks.device)[None] + field * _bview(alpha, d)
    return _warp(masks, src, _is_hard(masks))


@_register("grid_distortion", "boundary", local=True)
def grid_distortion(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Piecewise-linear per-axis remapping on a grid of cells of about one object radius."""
    b = masks.shape[0]
    sp = masks.shape[2:]
    d = len(sp)
    dev = masks.device
    s = _strength(strength, b, dev)
    _, req = _object_scale(masks)
    src_axes = []
    for ax, L in enumerate(sp):
        cells = int(min(24, max(3, round(L / (1.5 * float(req.median()))))))
        cells = min(cells, max(1, L - 1))
        lim = 0.6 * s[:, None]
        widths = 1 + lim * _uniform(gen, (b, cells), -1, 1, dev)
        nodes = torch.cat([torch.zeros(b, 1, device=dev), widths.cumsum(1)], 1)
        nodes = nodes / nodes[:, -1:]
        t = torch.arange(L, device=dev, dtype=torch.float32) / max(L - 1, 1)
        pos = t * cells
        i = pos.floor().long().clamp(max=cells - 1)
        frac = pos - i
        v0, v1 = nodes[:, i], nodes[:, i + 1]
        src = (v0 + frac * (v1 - v0)) * (L - 1)  # (B, L)
        shape = [b] + [1] * d
        shape[1 + ax] = L
        src_axes.append(src.reshape(shape).expand(b, *sp))
    return _warp(masks, torch.stack(src_axes, 1), _is_hard(masks))


# --------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------
@_register("holes", "structure", local=True)
def holes(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Punch 1-4 elliptical holes, centred inside the object, sized relative to it."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n, sp, d, dev = x.shape[0], x.shape[2:], _sdims(x), x.device
    s = _strength(strength, b, dev).repeat_interleave(k)
    _, _, req = _fg_stats(x)
    nmax = 4
    count = 1 + (s * 3 * _rand(gen, (n,), dev)).round()
    valid = torch.arange(nmax, device=dev)[None] < count[:, None]
    centers = _unravel(_sample_points(x.reshape(n, -1), nmax, gen), sp)
    rad = req.reshape(n, 1, 1) * (0.1 + 0.35 * s.reshape(n, 1, 1)) * _uniform(gen, (n, nmax, d), 0.5, 1.2, dev)
    hole = _ellipsoids(sp, centers, rad + 0.5, valid)
    return (x * ~hole).reshape(masks.shape)


@_register("islands", "structure")
def islands(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Add 1-4 spurious blobs, mostly near the object (within a few radii), some anywhere."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n, sp, d, dev = x.shape[0], x.shape[2:], _sdims(x), x.device
    s = _strength(strength, b, dev).repeat_interleave(k)
    _, cent, req = _fg_stats(x)
    req = torch.where(req > 0, req, torch.full_like(req, 0.05 * min(sp)))
    dist2 = 0.0
    for i, c in enumerate(_coords(sp, dev)):
        dist2 = dist2 + (c - _bview(cent[..., i], d)) ** 2
    near = torch.exp(-dist2 / (2 * _bview(3 * req, d) ** 2))
    weights = (1 - (x > 0.5).float()) * (0.05 + near)
    nmax = 4
    count = 1 + (s * 3 * _rand(gen, (n,), dev)).round()
    valid = torch.arange(nmax, device=dev)[None] < count[:, None]
    centers = _unravel(_sample_points(weights.reshape(n, -1), nmax, gen), sp)
    rad = req.reshape(n, 1, 1) * (0.1 + 0.4 * s.reshape(n, 1, 1)) * _uniform(gen, (n, nmax, d), 0.5, 1.2, dev)
    blob = _ellipsoids(sp, centers, rad + 0.7, valid)
    return torch.maximum(x, blob.float()).reshape(masks.shape)


@_register("keep_largest", "structure", local=True)
def keep_largest(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Keep only the largest connected component of each channel (never adds foreground)."""
    x = _fold_channels(masks)
    lab = _components(x)
    counts = _component_counts(lab)
    best = counts.argmax(1)
    keep = (lab == best.reshape(-1, *([1] * (lab.dim() - 1)))) & (lab > 0)
    return (x * keep).reshape(masks.shape)


@_register("drop_component", "structure", local=True)
def drop_component(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Remove one random connected component; a single-component object loses the part
    beyond a random cut line instead (deeper cut with strength)."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n, sp, d, dev = x.shape[0], x.shape[2:], _sdims(x), x.device
    s = _strength(strength, b, dev).repeat_interleave(k)
    lab = _components(x)
    counts = _component_counts(lab)
    present = counts > 0
    ncomp = present.sum(1)
    target = _randint(gen, ncomp.clamp_min(1).float(), (n,), dev) + 1
    chosen = (present.long().cumsum(1) >= target[:, None]).float().argmax(1)
    drop = (lab == _bview(chosen, d)) & (lab > 0) & _bview(ncomp > 1, d)
    # single component: half-space cut through an offset of the centroid
    _, cent, req = _fg_stats(x)
    u = _randn(gen, (n, d), dev)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-6)
    proj = 0.0
    for i, c in enumerate(_coords(sp, dev)):
        proj = proj + (c - _bview(cent[..., i], d)) * _bview(u[:, i], d)
    offset = req.reshape(n) * (1 - 1.5 * s * _uniform(gen, (n,), 0.5, 1.0, dev))
    cut = (proj > _bview(offset, d)) & _bview(ncomp == 1, d)
    return (x * ~(drop | cut)).reshape(masks.shape)


@_register("rect_dropout", "structure", local=True)
def rect_dropout(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Zero out 1-3 boxes centred on foreground pixels (same boxes for all classes)."""
    b = masks.shape[0]
    sp, d, dev = masks.shape[2:], _sdims(masks), masks.device
    s = _strength(strength, b, dev)
    u = masks.amax(1, keepdim=True)
    _, req = _object_scale(masks)
    nmax = 3
    count = 1 + (s * 2 * _rand(gen, (b,), dev)).round()
    valid = torch.arange(nmax, device=dev)[None] < count[:, None]
    centers = _unravel(_sample_points(u.reshape(b, -1), nmax, gen), sp)
    half = req.reshape(b, 1, 1) * (0.15 + 0.7 * s.reshape(b, 1, 1)) * _uniform(gen, (b, nmax, d), 0.4, 1.0, dev)
    box = _boxes(sp, centers, half, valid)
    return masks * ~box


# --------------------------------------------------------------------------------------
# Geometry (about the centroid of all channels, same transform for every class)
# --------------------------------------------------------------------------------------
def _rotation(gen: torch.Generator, angle: Tensor, d: int) -> Tensor:
    """(B, d, d) rotations; in 3D about the slice (first) axis, i.e. in-plane."""
    b = angle.shape[0]
    c, sn = torch.cos(angle), torch.sin(angle)
    r = torch.eye(d, device=angle.device).repeat(b, 1, 1)
    i, j = d - 2, d - 1
    r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -sn, sn, c
    return r


def _unit(gen: torch.Generator, b: int, d: int, device: torch.device) -> Tensor:
    u = _randn(gen, (b, d), device)
    return u / u.norm(dim=1, keepdim=True).clamp_min(1e-6)


@_register("shift", "geometry", local=True)
def shift(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Translate by up to ~1.2 object radii in a random direction."""
    b, d, dev = masks.shape[0], _sdims(masks), masks.device
    s = _strength(strength, b, dev)
    cent, req = _object_scale(masks)
    mag = 1 + s * 1.2 * req * _uniform(gen, (b,), 0.3, 1.0, dev)
    t = _unit(gen, b, d, dev) * mag[:, None]
    return _warp_affine(masks, torch.eye(d, device=dev).repeat(b, 1, 1), t, cent, _is_hard(masks))


@_register("scale", "geometry", local=True)
def scale(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Isotropic scaling about the centroid by a factor in [0.5, 2] (wider with strength)."""
    b, d, dev = masks.shape[0], _sdims(masks), masks.device
    s = _strength(strength, b, dev)
    cent, _ = _object_scale(masks)
    f = torch.exp(_sign(gen, (b,), dev) * s * math.log(2) * _uniform(gen, (b,), 0.3, 1.0, dev))
    mat = torch.eye(d, device=dev)[None] * f[:, None, None]
    return _warp_affine(masks, mat, torch.zeros(b, d, device=dev), cent, _is_hard(masks))


@_register("rotation", "geometry", local=True)
def rotation(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Rotation about the centroid by up to 180 degrees (in-plane for 3D)."""
    b, d, dev = masks.shape[0], _sdims(masks), masks.device
    s = _strength(strength, b, dev)
    cent, _ = _object_scale(masks)
    ang = _sign(gen, (b,), dev) * s * math.pi * _uniform(gen, (b,), 0.3, 1.0, dev)
    return _warp_affine(masks, _rotation(gen, ang, d), torch.zeros(b, d, device=dev), cent, _is_hard(masks))


@_register("affine", "geometry", local=True)
def affine(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Random affine: rotation, anisotropic scale, shear and translation, all scaled by strength."""
    b, d, dev = masks.shape[0], _sdims(masks), masks.device
    s = _strength(strength, b, dev)
    cent, req = _object_scale(masks)
    ang = s * _uniform(gen, (b,), -0.6, 0.6, dev) * math.pi
    sc = torch.exp(s[:, None] * _uniform(gen, (b, d), -0.5, 0.5, dev))
    shear = torch.eye(d, device=dev).repeat(b, 1, 1)
    shear[:, d - 2, d - 1] = s * _uniform(gen, (b,), -0.4, 0.4, dev)
    mat = _rotation(gen, ang, d) @ torch.diag_embed(sc) @ shear
    t = _unit(gen, b, d, dev) * (s * 0.6 * req * _rand(gen, (b,), dev))[:, None]
    return _warp_affine(masks, mat, t, cent, _is_hard(masks))


# --------------------------------------------------------------------------------------
# Blob ("early network" outputs)
# --------------------------------------------------------------------------------------
def _blob(masks: Tensor, gen: torch.Generator, strength: Strength, wobble: bool) -> Tensor:
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n, sp, d, dev = x.shape[0], x.shape[2:], _sdims(x), x.device
    s = _strength(strength, b, dev).repeat_interleave(k)
    area, cent, req = _fg_stats((x > 0.5).float())
    area, req, cent = area.reshape(n), req.reshape(n), cent[:, 0]
    empty = area <= 0
    p = float(torch.tensor(sp).prod())
    # empty truth: a small blob near the image centre (Dice 0: a false positive)
    area = torch.where(empty, p * _uniform(gen, (n,), 0.003, 0.03, dev), area)
    req = torch.where(empty, (area / math.pi).sqrt(), req)
    target = (area * (1 + s * _uniform(gen, (n,), -0.5, 0.5, dev))).round().clamp_min(1)
    jitter = _randn(gen, (n, d), dev) * (s * 0.3 * req)[:, None]
    cent = cent + jitter
    dist2 = 0.0
    for i, c in enumerate(_coords(sp, dev)):
        dist2 = dist2 + (c - _bview(cent[:, i], d)) ** 2
    field = -dist2 / _bview(req.clamp_min(1) ** 2, d)
    if wobble:
        field = field + _bview(0.3 + 1.2 * s, d) * _lowfreq_noise(gen, (n, 1, *sp), 0.6 * req, dev)
    return _topk_mask(field, target).reshape(masks.shape)


@_register("blob_disc", "blob", local=True)
def blob_disc(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Disc (ball in 3D) of about equal area at the centroid (area/centre jitter with strength)."""
    return _blob(masks, gen, strength, wobble=False)


@_register("blob_wobbly", "blob", local=True)
def blob_wobbly(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Irregular blob of about equal area at the centroid: Gaussian bump plus smooth noise."""
    return _blob(masks, gen, strength, wobble=True)


# --------------------------------------------------------------------------------------
# Catastrophic
# --------------------------------------------------------------------------------------
@_register("inverted", "catastrophic")
def inverted(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Foreground <-> background."""
    return 1.0 - masks


@_register("empty", "catastrophic")
def empty(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """All background (missed structure)."""
    return torch.zeros_like(masks)


@_register("full", "catastrophic")
def full(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """All foreground."""
    return torch.ones_like(masks)


@_register("noise", "catastrophic")
def noise(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Random blobby noise covering 2-50% of the image, unrelated to the truth."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n, sp, dev = x.shape[0], x.shape[2:], x.device
    cell = min(sp) * _uniform(gen, (n,), 0.01, 0.08, dev)
    field = _lowfreq_noise(gen, (n, 1, *sp), cell, dev)
    frac = _uniform(gen, (n,), 0.02, 0.5, dev)
    return _topk_mask(field, (frac * float(torch.tensor(sp).prod())).round()).reshape(masks.shape)


# --------------------------------------------------------------------------------------
# Multiclass
# --------------------------------------------------------------------------------------
def _pick_channels(gen: torch.Generator, b: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    i = _randint(gen, k, (b,), device)
    j = (i + 1 + _randint(gen, max(k - 1, 1), (b,), device)) % k
    return i, j


@_register("swap_classes", "multiclass", needs_multiclass=True)
def swap_classes(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Swap the masks of two random classes (label confusion between structures)."""
    b, k = masks.shape[:2]
    i, j = _pick_channels(gen, b, k, masks.device)
    perm = torch.arange(k, device=masks.device).repeat(b, 1)
    perm.scatter_(1, i[:, None], j[:, None])
    perm.scatter_(1, j[:, None], i[:, None])
    idx = perm.reshape(b, k, *([1] * _sdims(masks))).expand_as(masks)
    return torch.gather(masks, 1, idx)


@_register("drop_class", "multiclass", needs_multiclass=True)
def drop_class(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Empty one random class channel."""
    b, k = masks.shape[:2]
    i = _randint(gen, k, (b,), masks.device)
    keep = torch.arange(k, device=masks.device)[None] != i[:, None]
    return masks * keep.reshape(b, k, *([1] * _sdims(masks))).float()


def _single_channel_pool(spatial_dims: int) -> list[str]:
    return [c.name for c in CORRUPTIONS.values()
            if c.category in ("morphology", "shape", "boundary", "structure", "geometry", "blob", "resolution")
            and c.applicable(spatial_dims, 1)]


@_register("corrupt_one_class", "multiclass", needs_multiclass=True)
def corrupt_one_class(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Apply one random single-structure corruption to one random class channel only."""
    b, k = masks.shape[:2]
    d = _sdims(masks)
    name = _pick(gen, _single_channel_pool(d))
    i = _randint(gen, k, (b,), masks.device)
    idx = i.reshape(b, 1, *([1] * d)).expand(b, 1, *masks.shape[2:])
    ch = torch.gather(masks, 1, idx)
    ch = apply_corruption(name, ch, gen, _strength(strength, b, masks.device))
    return masks.scatter(1, idx, ch)


# --------------------------------------------------------------------------------------
# Volumetric (3D only; slices along the first spatial axis D)
# --------------------------------------------------------------------------------------
def _slice_select(gen: torch.Generator, s: Tensor, b: int, d: int, device: torch.device) -> Tensor:
    """(B, D) bool: each slice selected with probability 0.1..0.6 by strength (>= 1 slice)."""
    p = 0.1 + 0.5 * s
    sel = _rand(gen, (b, d), device) < p[:, None]
    forced = _randint(gen, d, (b,), device)
    return sel | (torch.arange(d, device=device)[None] == forced[:, None])


@_register("drop_slices", "volumetric", requires_3d=True)
def drop_slices(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Blank a random subset of slices (missed slices of a 2.5D network)."""
    b, _, d = masks.shape[:3]
    s = _strength(strength, b, masks.device)
    sel = _slice_select(gen, s, b, d, masks.device)
    return masks * (~sel).float().reshape(b, 1, d, 1, 1)


@_register("shift_slices", "volumetric", requires_3d=True)
def shift_slices(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """In-plane translation of a random subset of slices (slice misregistration)."""
    b, k, d, h, w = masks.shape
    dev = masks.device
    s = _strength(strength, b, dev)
    _, req = _object_scale(masks)
    sel = _slice_select(gen, s, b, d, dev).float()
    mag = (1 + s * 0.8 * req)[:, None] * _uniform(gen, (b, d), 0.3, 1.0, dev) * sel
    t = _unit(gen, b * d, 2, dev) * mag.reshape(-1, 1)
    x = _fold_slices(masks)
    src = _base_coords((h, w), dev)[None] - t.reshape(b * d, 2, 1, 1)
    return _unfold_slices(_warp(x, src, _is_hard(masks)), b, d)


@_register("corrupt_slices", "volumetric", requires_3d=True)
def corrupt_slices(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Apply one random 2D corruption to a random subset of slices only."""
    b, k, d = masks.shape[:3]
    dev = masks.device
    s = _strength(strength, b, dev)
    name = _pick(gen, _single_channel_pool(2))
    sel = _slice_select(gen, s, b, d, dev)
    bad = _unfold_slices(apply_corruption(name, _fold_slices(masks), gen, s.repeat_interleave(d)), b, d)
    return torch.where(sel.reshape(b, 1, d, 1, 1), bad, masks)


# --------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------
@_register("down_up", "resolution", local=True)
def down_up(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Area-downsample by 2..8 (with strength) then upsample (nearest or bilinear+threshold)."""
    b = masks.shape[0]
    sp, d, dev = masks.shape[2:], _sdims(masks), masks.device
    s = _strength(strength, b, dev)
    fac = (2 + s * 6 * _uniform(gen, (b,), 0.5, 1.0, dev)).round().long().clamp(2, max(2, min(sp) // 2))
    nearest = _rand(gen, (b,), dev) < 0.5
    hard = _is_hard(masks)
    pool = F.avg_pool2d if d == 2 else F.avg_pool3d
    lin = "bilinear" if d == 2 else "trilinear"

    def op(x: Tensor, key: int) -> Tensor:
        f, use_nearest = key // 2, key % 2 == 1
        small = pool(x, f, f, ceil_mode=True)
        if use_nearest:  # blocky staircase, like a low-resolution network output
            return F.interpolate(small, size=tuple(sp), mode="nearest")
        return F.interpolate(small, size=tuple(sp), mode=lin, align_corners=False)

    out = _grouped(masks, fac * 2 + nearest.long(), op)
    return (out >= 0.5).float() if hard else out


# --------------------------------------------------------------------------------------
# Soft (probability maps)
# --------------------------------------------------------------------------------------
@_register("soft_blur", "soft", local=True)
def soft_blur(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Blurred mask -> logits -> sigmoid with random temperature, plus smooth logit noise."""
    b, k = masks.shape[:2]
    x = _fold_channels(masks)
    n, sp, d, dev = x.shape[0], x.shape[2:], _sdims(x), x.device
    s = _strength(strength, b, dev).repeat_interleave(k)
    y = _gaussian_blur(x, 0.5 + 2.5 * s * _rand(gen, (n,), dev))
    temp = _bview(_uniform(gen, (n,), 4.0, 12.0, dev) * (1 - 0.6 * s), d)
    logit = (2 * y - 1) * temp
    logit = logit + _bview(2.0 * s, d) * _lowfreq_noise(gen, (n, 1, *sp), 3.0, dev)
    return torch.sigmoid(logit).reshape(masks.shape)


@_register("soft_temperature", "soft")
def soft_temperature(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Confidence scaling: sigmoid((2m - 1) T), T from ~6 (confident) to ~0.5 (unsure)."""
    b = masks.shape[0]
    s = _strength(strength, b, masks.device)
    temp = 0.5 + 5.5 * (1 - s) * _uniform(gen, (b,), 0.6, 1.0, masks.device)
    return torch.sigmoid((2 * masks - 1) * temp.reshape(b, *([1] * (masks.dim() - 1))))


@_register("soft_noise", "soft")
def soft_noise(masks: Tensor, gen: torch.Generator, strength: Strength) -> Tensor:
    """Logits with pixel and smooth noise: speckled, uncertain probability maps."""
    b = masks.shape[0]
    sp, dev = masks.shape[2:], masks.device
    s = _strength(strength, b, dev)
    shape = (b, 1) + (1,) * len(sp)
    temp = _uniform(gen, (b,), 2.0, 8.0, dev).reshape(shape)
    amp = (0.3 + 2.5 * s).reshape(shape)
    noise_ = 0.5 * _randn(gen, masks.shape, dev) + _lowfreq_noise(gen, masks.shape, 4.0, dev)
    return torch.sigmoid((2 * masks - 1) * temp + amp * noise_)


def make_soft(masks: Tensor, gen: torch.Generator, strength: Strength | None = None) -> Tensor:
    """Turn (possibly corrupted) hard masks into plausible probability maps (random soft op)."""
    name = _pick(gen, [c.name for c in CORRUPTIONS.values() if c.category == "soft"])
    return apply_corruption(name, masks, gen, strength)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def list_corruptions(spatial_dims: int, num_classes: int, categories: Sequence[str] | None = None) -> list[str]:
    """Names applicable to masks with ``spatial_dims`` (2/3) and ``num_classes`` channels."""
    return [c.name for c in CORRUPTIONS.values()
            if c.applicable(spatial_dims, num_classes) and (categories is None or c.category in categories)]


def _roi(masks: Tensor, max_fraction: float = 0.6) -> tuple[slice, ...] | None:
    """Crop (union bounding box of the batch's foreground + a margin of 0.75x its largest
    extent, >= 8 px) when it covers less than ``max_fraction`` of the image, else None."""
    sp = masks.shape[2:]
    ranges = _bbox(_union(masks) > 0.01)
    if ranges is None:
        return None  # empty masks: e.g. blobs are placed relative to the whole image
    margin = max(8, math.ceil(0.75 * max(hi - lo + 1 for lo, hi in ranges)))
    sl = tuple(slice(max(0, lo - margin), min(n, hi + margin + 1)) for (lo, hi), n in zip(ranges, sp))
    frac = math.prod(s_.stop - s_.start for s_ in sl) / math.prod(sp)
    return sl if frac < max_fraction else None


def apply_corruption(name: str, masks: Tensor, gen: torch.Generator, strength: Strength | None = None,
                     crop: bool = True) -> Tensor:
    """Apply a registered corruption; ``strength`` is drawn U(0,1) per sample when None.

    ``local`` corruptions run on the crop around the batch's foreground when it is small
    (``crop=True``): lesions usually cover a few % of the image, so this is the main speed-up;
    outside the crop the input is kept. The output is float32 on ``masks.device`` with
    values in [0, 1] and no NaN.
    """
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}")
    if masks.dim() not in (4, 5):
        raise ValueError(f"masks must be (B,K,H,W) or (B,K,D,H,W), got {tuple(masks.shape)}")
    c = CORRUPTIONS[name]
    if not c.applicable(_sdims(masks), masks.shape[1]):
        raise ValueError(f"corruption {name!r} does not apply to {_sdims(masks)}D masks with K={masks.shape[1]}")
    masks = masks.float()
    if masks.shape[0] == 0:
        return masks.clone()
    if strength is None:
        strength = _rand(gen, (masks.shape[0],), masks.device)
    sl = _roi(masks) if (crop and c.local) else None
    if sl is None:
        out = c.fn(masks, gen, strength).float()
        if out.untyped_storage().data_ptr() == masks.untyped_storage().data_ptr():
            out = out.clone()  # never clean the caller's tensor in place
        return out.nan_to_num_(nan=0.0).clamp_(0.0, 1.0)  # in place: no second full-size allocation
    # crop: the input outside it is copied and cleaned in one pass, then the crop is overwritten
    # and cleaned alone (the sampler makes ~50 calls a batch, so full-size passes count)
    idx = (slice(None), slice(None), *sl)
    out = masks.nan_to_num(nan=0.0).clamp_(0.0, 1.0)
    out[idx] = c.fn(masks[idx].contiguous(), gen, strength)
    out[idx].nan_to_num_(nan=0.0).clamp_(0.0, 1.0)
    return out


def chain_pool(spatial_dims: int, num_classes: int) -> list[str]:
    """Corruptions that make sense as links of a chain (no catastrophic / blob / soft)."""
    return list_corruptions(spatial_dims, num_classes,
                            ("morphology", "shape", "boundary", "structure", "geometry", "multiclass",
                             "volumetric", "resolution"))


def chain(masks: Tensor, gen: torch.Generator, names: Sequence[str] | None = None, n: int | None = None,
          strength: Strength | None = None, return_names: bool = False) -> Tensor | tuple[Tensor, list[str]]:
    """Apply 2-3 (``n``) random corruptions in sequence (or the given ``names``).

    Each link gets its own strength, U(0, 0.7) per sample unless ``strength`` is given (mild
    links: three strong ones in a row almost always end at Dice ~0).
    """
    if names is None:
        if n is None:
            n = 2 + int(torch.randint(2, (1,), generator=gen, device=gen.device))
        pool = chain_pool(_sdims(masks), masks.shape[1])
        names = [_pick(gen, pool) for _ in range(n)]
    out = masks.float()
    for nm in names:
        st = strength if strength is not None else 0.7 * _rand(gen, (masks.shape[0],), masks.device)
        out = apply_corruption(nm, out, gen, st)
    return (out, list(names)) if return_names else out


def swap_indices(query: Tensor, pool: Tensor, gen: torch.Generator, exclude: Tensor | None = None,
                 query_groups: Tensor | None = None, pool_groups: Tensor | None = None) -> Tensor:
    """For each query mask, the index of the pool mask with the most similar per-class
    foreground areas (log-area distance, tiny random tie-break).

    ``exclude[i]`` is a pool index forbidden for query ``i``; with ``query_groups`` and
    ``pool_groups`` (integer ids, e.g. the source image of each row) a pool mask of the query's
    own group is forbidden too: a copy of the same image's truth would make the "swap" a no-op.
    Queries without any allowed partner get ``-1``.
    """
    dims = tuple(range(2, query.dim()))
    qa = torch.log1p(query.float().sum(dims))
    pa = torch.log1p(pool.float().sum(dims))
    dist = (qa[:, None] - pa[None]).abs().sum(-1)  # (Bq, Bp)
    dist = dist + 1e-3 * _rand(gen, dist.shape, dist.device)
    if exclude is not None:
        dist = dist.scatter(1, exclude[:, None].long().to(dist.device), math.inf)
    if query_groups is not None and pool_groups is not None:
        same = query_groups.to(dist.device)[:, None] == pool_groups.to(dist.device)[None]
        dist = dist.masked_fill(same, math.inf)
    best, idx = dist.min(1)
    return torch.where(torch.isfinite(best), idx, torch.full_like(idx, -1))


def swap_with_other(masks: Tensor, gen: torch.Generator, pool: Tensor | None = None,
                    return_index: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Replace each mask with another sample's mask of most similar foreground area.

    From ``pool`` when given, otherwise from the batch itself (never itself when B > 1). With
    B == 1 and no pool there is nothing to swap with; the mask is mirrored along its last axis
    instead (index -1 is returned for it).
    """
    masks = masks.float()
    b = masks.shape[0]
    if pool is not None:
        idx = swap_indices(masks, pool, gen)
        out = pool.float()[idx].to(masks.device)
    elif b > 1:
        idx = swap_indices(masks, masks, gen, exclude=torch.arange(b, device=masks.device))
        out = masks[idx]
    else:
        idx = torch.full((b,), -1, dtype=torch.long, device=masks.device)
        out = masks.flip(-1)
    return (out, idx) if return_index else out
