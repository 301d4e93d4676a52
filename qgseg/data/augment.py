"""Batched, seeded data augmentation on tensors (CPU or GPU, one code path).

Augmenting whole batches on the training device keeps the input pipeline out of the way
of the GPU, and drawing every random number from one ``torch.Generator`` makes a run
exactly resumable: the generator state is part of the checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def spatial_augment(images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
                    cfg: AugmentConfig = AugmentConfig()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flips and in-plane rotation/scaling; labels follow with nearest sampling."""
    b = images.shape[0]
    spatial = images.ndim - 2
    for axis in range(spatial):
        flip = torch.rand(b, generator=gen) < cfg.flip_p
        if flip.any():
            dim = 2 + axis
            images = torch.where(_bcast(flip, images), images.flip(dim), images)
            if labels is not None:
                labels = torch.where(_bcast(flip, labels, 1), labels.flip(dim - 1), labels)
    apply = torch.rand(b, generator=gen) < cfg.affine_p
    if not apply.any():
        return images, labels
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
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if labels is not None:
        labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                               align_corners=False)[:, 0].long()
    return images, labels


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
