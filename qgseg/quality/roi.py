"""Mask-centred region of interest for the quality predictor.

Hearts in a cardiac MRI slice and polyps in a colonoscopy frame span about a quarter of the
image, so at a fixed input size most of the predictor's pixels are background and the
boundary it must judge is a few pixels wide. Cropping a box around the mask being scored
(plus a margin of context) and resampling it to the network input size gives the structure
several times more pixels at the same compute.

The box comes from the mask alone (nothing else is known at scoring time), is square in
normalised coordinates (each axis scaled by the same factor, so a resized image keeps its
aspect), is at least ``min_fraction`` of the image (tiny masks keep context), at most the
whole image, and is shifted to lie inside the image. An empty mask gets the whole image.

Everything is batched (one ``affine_grid`` + ``grid_sample``), 2D and 3D, and differentiable
w.r.t. the cropped tensor; the box itself is computed from the detached mask, so QAR's gradient
flows through the resampling into the mask values, not into the box.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["check_roi_params", "mask_roi_theta", "roi_crop", "roi_uncrop"]


def check_roi_params(margin: float, min_fraction: float) -> None:
    """Raise ``ValueError`` unless ``margin >= 0`` and ``0 < min_fraction <= 1``."""
    if margin < 0 or not 0 < min_fraction <= 1:
        raise ValueError(f"need margin >= 0 and 0 < min_fraction <= 1, got {margin}, {min_fraction}")


def mask_roi_theta(masks: torch.Tensor, margin: float = 0.5, min_fraction: float = 0.25,
                   threshold: float = 0.5) -> torch.Tensor:
    """Affine matrices ``(B, D, D + 1)`` (``F.affine_grid`` convention) of each sample's box.

    Args:
        masks: ``(B, K, *spatial)`` foreground channels, hard or soft; the box covers the union
            of the channels above ``threshold``.
        margin: context added on each side, as a fraction of the mask's largest extent.
        min_fraction: smallest box side as a fraction of the image side (caps the zoom at
            ``1 / min_fraction``).
    """
    if masks.ndim not in (4, 5):
        raise ValueError(f"masks must be (B, K, H, W) or (B, K, D, H, W), got {tuple(masks.shape)}")
    check_roi_params(margin, min_fraction)
    fg = masks.detach().amax(1) > threshold  # (B, *spatial)
    b, sd = fg.shape[0], fg.ndim - 1
    lo, hi = [], []
    for axis in range(sd):
        other = [a + 1 for a in range(sd) if a != axis]
        profile = fg.any(dim=other) if other else fg  # (B, n): any foreground at this coordinate
        n = profile.shape[1]
        idx = torch.arange(n, device=fg.device)
        first = torch.where(profile, idx, n).amin(1).float()
        last = torch.where(profile, idx, -1).amax(1).float()
        # pixel edges in normalised coordinates (align_corners=False): pixel i spans [2i/n - 1, 2(i+1)/n - 1]
        lo.append(2 * first / n - 1)
        hi.append(2 * (last + 1) / n - 1)
    lo_t, hi_t = torch.stack(lo, 1), torch.stack(hi, 1)  # (B, sd), axis order of the tensor
    has = fg.flatten(1).any(1)
    half = ((hi_t - lo_t) / 2).amax(1) * (1 + 2 * margin)
    half = torch.where(has, half.clamp(min_fraction, 1.0), torch.ones_like(half))
    centre = torch.where(has[:, None], (lo_t + hi_t) / 2, torch.zeros_like(lo_t))
    bound = (1 - half)[:, None]
    centre = torch.maximum(torch.minimum(centre, bound), -bound)  # keep the box inside the image
    theta = torch.zeros(b, sd, sd + 1, device=masks.device, dtype=torch.float32)
    for i in range(sd):
        theta[:, i, i] = half
    theta[:, :, sd] = centre.flip(1)  # affine_grid's coordinates run x (last axis) first
    return theta


def roi_crop(x: torch.Tensor, theta: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resample the boxes ``theta`` of ``x`` ``(B, C, *spatial)`` to ``(B, C, *size)``."""
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def roi_uncrop(y: torch.Tensor, theta: torch.Tensor, size: Sequence[int], fill: float = 0.0,
               mode: str = "bilinear") -> torch.Tensor:
    """Inverse of :func:`roi_crop`: put crops ``y`` back into frames of ``size``; ``fill`` outside the box."""
    sd = theta.shape[1]
    scale = theta[:, range(sd), range(sd)]  # (B, sd) in x-first order
    inv = torch.zeros_like(theta)
    for i in range(sd):
        inv[:, i, i] = 1 / scale[:, i]
    inv[:, :, sd] = -theta[:, :, sd] / scale
    return roi_crop(y - fill, inv, size, mode) + fill
