"""Mixing of images and targets for semi-supervised methods (CutMix, copy-paste, mixup).

Every random draw uses the generator passed in (the run's, checkpointed), so a resumed run
mixes exactly as the uninterrupted one would.
"""
from __future__ import annotations

import math

import torch

__all__ = ["cutmix_boxes", "centre_box", "paste", "mixup_pairs"]


def _box_mask(shape: tuple[int, ...], starts: list[int], sizes: list[int]) -> torch.Tensor:
    m = torch.zeros(shape)
    m[tuple(slice(a, a + s) for a, s in zip(starts, sizes))] = 1.0
    return m


def cutmix_boxes(n: int, spatial: tuple[int, ...], gen: torch.Generator, p: float = 0.5,
                 area: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """UniMatch's CutMix boxes: with probability ``p`` per sample a box of ``area`` (fraction of the image)
    and aspect ``ratio``; ``(n, *spatial)`` float mask, 1 inside the box (the pasted region)."""
    masks = torch.zeros(n, *spatial)
    for i in range(n):
        if float(torch.rand(1, generator=gen)) > p:
            continue
        frac = area[0] + (area[1] - area[0]) * float(torch.rand(1, generator=gen))
        r = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * float(torch.rand(1, generator=gen)))
        h, w = spatial[-2], spatial[-1]
        bh = min(h, max(1, int(round(math.sqrt(frac * h * w / r)))))
        bw = min(w, max(1, int(round(math.sqrt(frac * h * w * r)))))
        y = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        lead = list(spatial[:-2])
        masks[i] = _box_mask(tuple(spatial), [0] * len(lead) + [y, x], lead + [bh, bw])
    return masks


def centre_box(n: int, spatial: tuple[int, ...], gen: torch.Generator, fraction: float = 2 / 3) -> torch.Tensor:
    """BCP's box: ``fraction`` of each in-plane side, at a random position; ``(n, *spatial)``, 1 inside."""
    h, w = spatial[-2], spatial[-1]
    bh, bw = max(1, int(h * fraction)), max(1, int(w * fraction))
    masks = torch.zeros(n, *spatial)
    for i in range(n):
        y = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        lead = list(spatial[:-2])
        masks[i] = _box_mask(tuple(spatial), [0] * len(lead) + [y, x], lead + [bh, bw])
    return masks


def paste(base: torch.Tensor, other: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``other`` inside ``box`` (B, *spatial), ``base`` outside; images (B, C, *S) or maps (B, *S)."""
    m = box.to(base.device)
    if base.ndim == m.ndim + 1:
        m = m.unsqueeze(1)
    return torch.where(m > 0.5, other.to(base.dtype), base)


def mixup_pairs(n: int, gen: torch.Generator, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A partner for each sample (a random permutation) and mixing factors ``lam ~ Beta(alpha, alpha)``."""
    perm = torch.randperm(n, generator=gen)
    if alpha == 1.0:  # Beta(1, 1) is uniform: drawn with the run's generator
        return perm, torch.rand(n, generator=gen)
    # other Beta(a, a): two Gamma draws (global RNG, which the checkpoint also restores)
    g1 = torch._standard_gamma(torch.full((n,), float(alpha)))  # noqa: SLF001
    g2 = torch._standard_gamma(torch.full((n,), float(alpha)))  # noqa: SLF001
    return perm, g1 / (g1 + g2)
