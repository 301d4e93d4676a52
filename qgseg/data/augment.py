"""Batched, seeded data augmentation on tensors (CPU or GPU, one code path).

Augmenting whole batches on the training device keeps the input pipeline out of the way
of the GPU, and drawing every random number from one ``torch.Generator`` makes a run
exactly resumable: the generator state is part of the checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    flip_p: float = 0.5
    rotate_deg: float = 20.0
    scale: tuple[float, float] = (0.85, 1.15)
    affine_p: float = 0.5
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.03
    intensity_p: float = 0.5


_RESAMPLING = {"image": ("bilinear", "border"), "soft": ("bilinear", "zeros"), "hard": ("nearest", "zeros")}


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def spatial_augment_many(tensors: Sequence[torch.Tensor | None], kinds: Sequence[str], gen: torch.Generator,
                         cfg: AugmentConfig = AugmentConfig()) -> list[torch.Tensor | None]:
    """The same random flips and in-plane rotation/scaling applied to several (B, C, *spatial)
    tensors, each resampled by its kind: "image" (bilinear, border values extend the field of
    view), "soft" (bilinear, zero outside: probability maps) or "hard" (nearest, zero outside:
    masks, labels). ``None`` entries pass through."""
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
                    cfg: AugmentConfig = AugmentConfig()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips and in-plane rotation/scaling of images (B, C, *S); integer labels (B, *S)
    follow with nearest sampling."""
    lab = None if labels is None else labels[:, None]
    images, lab = spatial_augment_many([images, lab], ["image", "hard"], gen, cfg)
    return images, (None if lab is None else lab[:, 0])


def intensity_augment(images: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()
                      ) -> torch.Tensor:
    """Random brightness, contrast, gamma and Gaussian noise, each sample independently."""
    b = images.shape[0]
    device, dtype = images.device, images.dtype
    apply = (torch.rand(b, generator=gen) < cfg.intensity_p).to(device)
    shift = _uniform(b, -cfg.brightness, cfg.brightness, gen).to(device, dtype)
    contrast = _uniform(b, *cfg.contrast, gen).to(device, dtype)
    gamma = _uniform(b, *cfg.gamma, gen).to(device, dtype)
    noise = torch.randn(images.shape, generator=gen).to(device, dtype) * cfg.noise_std
    dims = tuple(range(1, images.ndim))
    lo = images.amin(dim=dims, keepdim=True)
    hi = images.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    unit = ((images - lo) / span).clamp(0, 1) ** _bcast(gamma, images)
    out = (unit * span + lo)
    mean = out.mean(dim=dims, keepdim=True)
    out = (out - mean) * _bcast(contrast, images) + mean + _bcast(shift, images) * span + noise * span
    return torch.where(_bcast(apply, images), out, images)


def _bcast(v: torch.Tensor, like: torch.Tensor, lead: int = 1) -> torch.Tensor:
    return v.to(like.device).view(-1, *([1] * (like.ndim - lead)))
