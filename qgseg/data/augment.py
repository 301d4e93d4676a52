"""Batched, seeded data augmentation on tensors (CPU or GPU, one code path).

Augmenting whole batches on the training device keeps the input pipeline out of the way
of the GPU, and drawing every random number from one ``torch.Generator`` makes a run
exactly resumable: the generator state is part of the checkpoint.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..config import AugmentConfig

__all__ = ["AugmentConfig", "gaussian_blur", "intensity_augment", "spatial_augment", "spatial_augment_many"]


_RESAMPLING = {"image": ("bilinear", "border"), "soft": ("bilinear", "zeros"), "hard": ("nearest", "zeros")}


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def spatial_augment_many(tensors: Sequence[torch.Tensor | None], kinds: Sequence[str], gen: torch.Generator,
                         cfg: AugmentConfig | None = None) -> list[torch.Tensor | None]:
    """The same random flips and in-plane rotation/scaling applied to several (B, C, *spatial)
    tensors, each resampled by its kind: "image" (bilinear, border values extend the field of
    view), "soft" (bilinear, zero outside: probability maps) or "hard" (nearest, zero outside:
    masks, labels). ``None`` entries pass through."""
    cfg = cfg or AugmentConfig()
    ref = next(t for t in tensors if t is not None)
    b, spatial = ref.shape[0], ref.ndim - 2
    out = list(tensors)
    for axis in range(spatial):
        flip = (torch.rand(b, generator=gen) < cfg.flip_p).to(ref.device)
        if flip.any():
            out = [None if t is None else torch.where(_bcast(flip, t), t.flip(2 + axis), t) for t in out]
    apply = torch.rand(b, generator=gen) < cfg.affine_p
    if not apply.any():
        return out
    angle = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180 * apply
    scale = torch.where(apply, _uniform(b, *cfg.scale, gen), torch.ones(b))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid orders coordinates (x, y[, z]) = (W, H[, D]): rotate/scale in the (x, y)
    # plane only, so the through-plane axis of anisotropic 3D stacks is left alone.
    theta = torch.zeros(b, spatial, spatial + 1)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    if spatial == 3:
        theta[:, 2, 2] = 1.0
    grid = F.affine_grid(theta.to(ref.device, torch.float32), list(ref.shape), align_corners=False)
    warped = []
    for t, kind in zip(out, kinds):
        if t is None:
            warped.append(None)
            continue
        mode, padding = _RESAMPLING[kind]
        w = F.grid_sample(t.float(), grid.to(t.device), mode=mode, padding_mode=padding, align_corners=False)
        warped.append(w.to(t.dtype))
    return warped


def spatial_augment(images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
                    cfg: AugmentConfig | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips and in-plane rotation/scaling of images (B, C, *S); integer labels (B, *S)
    follow with nearest sampling."""
    lab = None if labels is None else labels[:, None]
    images, lab = spatial_augment_many([images, lab], ["image", "hard"], gen, cfg)
    return images, (None if lab is None else lab[:, 0])


def intensity_augment(images: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig | None = None
                      ) -> torch.Tensor:
    """Random brightness, contrast, gamma and Gaussian noise, each sample independently; with
    ``cfg.color_p``/``cfg.blur_p`` > 0 also per-channel colour gains and in-plane Gaussian blur."""
    cfg = cfg or AugmentConfig()
    b = images.shape[0]
    device, dtype = images.device, images.dtype
    apply = (torch.rand(b, generator=gen) < cfg.intensity_p).to(device)
    shift = _uniform(b, -cfg.brightness, cfg.brightness, gen).to(device, dtype)
    contrast = _uniform(b, *cfg.contrast, gen).to(device, dtype)
    gamma = _uniform(b, *cfg.gamma, gen).to(device, dtype)
    noise = torch.randn(images.shape, generator=gen).to(device, dtype) * cfg.noise_std
    # why: the optional steps draw nothing when off, so runs made before they existed reproduce
    if cfg.color_p > 0:
        color_on = (torch.rand(b, generator=gen) < cfg.color_p).to(device)
        gains = _uniform(b * images.shape[1], 1 - cfg.color_gain, 1 + cfg.color_gain, gen)
        gains = gains.view(b, images.shape[1], *([1] * (images.ndim - 2))).to(device, dtype)
        images = torch.where(_bcast(color_on, images), images * gains, images)
    if cfg.blur_p > 0:
        blur_on = (torch.rand(b, generator=gen) < cfg.blur_p).to(device)
        sigma = _uniform(b, *cfg.blur_sigma, gen)
    dims = tuple(range(1, images.ndim))
    lo = images.amin(dim=dims, keepdim=True)
    hi = images.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    unit = ((images - lo) / span).clamp(0, 1) ** _bcast(gamma, images)
    out = (unit * span + lo)
    mean = out.mean(dim=dims, keepdim=True)
    out = (out - mean) * _bcast(contrast, images) + mean + _bcast(shift, images) * span
    out = torch.where(_bcast(apply, images), out, images)
    if cfg.blur_p > 0:  # before the noise: sensor noise is not blurred by the optics
        out = torch.where(_bcast(blur_on, images), gaussian_blur(out, sigma), out)
    return out + torch.where(_bcast(apply, images), noise * span, torch.zeros_like(noise))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample of ``(B, C, *spatial)`` with its own ``sigma[b]`` (pixels) along the last
    two axes (in-plane for 3D stacks), separably, with edge values repeated at the border."""
    b, c = images.shape[:2]
    sigma = sigma.float().clamp_min(1e-3)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(images.device, images.dtype)
    x = images.reshape(1, b * c, *images.shape[2:])
    lead = images.ndim - 4  # 1 for 3D stacks: the through-plane axis is not blurred
    conv = F.conv2d if images.ndim == 4 else F.conv3d
    for axis in (-2, -1):
        shape = [1] * (images.ndim - 2)
        shape[axis] = 2 * radius + 1
        weight = kernel.view(b * c, 1, *shape)
        pad = [0, 0] * 2
        pad[2 * (-1 - axis)] = pad[2 * (-1 - axis) + 1] = radius  # F.pad lists the last axis first
        x = conv(F.pad(x, pad + [0, 0] * lead, mode="replicate"), weight, groups=b * c)
    return x.reshape(images.shape)


def _bcast(v: torch.Tensor, like: torch.Tensor, lead: int = 1) -> torch.Tensor:
    return v.to(like.device).view(-1, *([1] * (like.ndim - lead)))
