"""Per-sample (and per-class) unlabeled losses.

Quality weighting needs each unlabeled loss split by the sample, and for multi-class data by
the foreground class, whose pseudolabel defined it. The convention: a loss of shape ``(B, K)``
whose sum over K is the sample's loss. Pixels are attributed to the class of their pseudolabel;
background pixels are shared equally by the K foreground classes (so the split is exact: the sum
over classes and the batch mean give back the plain mean loss). With mixing (CutMix,
copy-paste) a pixel is attributed to the sample it was *taken from* (``source``), because that
sample's pseudolabel defined its target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["attribute_pixels", "attribute_samples", "pseudo_label_loss", "consistency_loss", "masked_dice_ce"]


def _share(pseudo: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, *S) class map -> (B, *S, K): 1 for the pixel's foreground class, 1/K each for background."""
    onehot = F.one_hot(pseudo.long().clamp(0, num_classes - 1), num_classes).float()
    k = num_classes - 1
    return onehot[..., 1:] + onehot[..., :1] / k


def attribute_pixels(pixel_loss: torch.Tensor, pseudo: torch.Tensor, num_classes: int,
                     source: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of a per-pixel loss ``(B, *S)`` split by class and by source sample -> ``(B, K)``.

    Args:
        pixel_loss: loss per pixel (graph attached).
        pseudo: ``(B, *S)`` class of each pixel's target (decides its class column).
        source: ``(B, *S)`` index of the sample each pixel's target came from (default: itself).
        valid: ``(B, *S)`` 0/1 (or soft) mask of pixels that count (confidence masks); counted
            pixels are still averaged over *all* pixels, as UniMatch and FixMatch do.
    """
    b = pixel_loss.shape[0]
    n = pixel_loss[0].numel()
    loss = pixel_loss if valid is None else pixel_loss * valid.to(pixel_loss)
    contrib = loss.unsqueeze(-1) * _share(pseudo, num_classes).to(loss)  # (B, *S, K)
    k = contrib.shape[-1]
    if source is None:
        return contrib.reshape(b, -1, k).sum(1) / n
    out = torch.zeros(b, k, dtype=contrib.dtype, device=contrib.device)
    return out.index_add(0, source.reshape(-1).long(), contrib.reshape(-1, k)) / n


def attribute_samples(per_sample: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    """Re-attribute a loss of each (mixed) sample ``(B, K)`` to the samples its pixels came from, in
    proportion to their pixel counts. Identity without ``source``."""
    if source is None:
        return per_sample
    b = per_sample.shape[0]
    frac = F.one_hot(source.reshape(b, -1).long(), b).float().mean(1)  # (B mixed, B source)
    return frac.t().to(per_sample) @ per_sample


def _soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, num_classes: int,
                    valid: torch.Tensor | None = None, smooth: float = 1e-5) -> torch.Tensor:
    """1 - soft Dice per sample and foreground class, ``(B, K)``."""
    onehot = F.one_hot(target.long(), num_classes).movedim(-1, 1).float()
    p, t = probs[:, 1:], onehot[:, 1:]
    if valid is not None:
        v = valid.to(p).unsqueeze(1)
        p, t = p * v, t * v
    dims = tuple(range(2, p.ndim))
    inter = (p * t).sum(dims)
    denom = p.sum(dims) + t.sum(dims)
    return 1.0 - (2 * inter + smooth) / (denom + smooth)


def pseudo_label_loss(logits: torch.Tensor, pseudo: torch.Tensor, valid: torch.Tensor | None = None,
                      source: torch.Tensor | None = None, dice: bool = True,
                      pixel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (+ soft Dice over foreground classes) of ``logits`` against a hard pseudolabel,
    per sample and class ``(B, K)`` (see the module docstring for the attribution)."""
    c = logits.shape[1]
    ce = F.cross_entropy(logits.float(), pseudo.long(), reduction="none")
    if pixel_weight is not None:
        ce = ce * pixel_weight
    out = attribute_pixels(ce, pseudo, c, source, valid)
    if dice:
        d = _soft_dice_loss(F.softmax(logits.float(), 1), pseudo, c, valid) / (c - 1)
        out = out + attribute_samples(d, source)
    return out


def consistency_loss(student_probs: torch.Tensor, target_probs: torch.Tensor, pseudo: torch.Tensor | None = None,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between softmax maps, per sample and class ``(B, K)``; each pixel counts
    for the class of ``pseudo`` (default: the target's argmax)."""
    pixel = ((student_probs.float() - target_probs.float()) ** 2).mean(1)
    pseudo = target_probs.argmax(1) if pseudo is None else pseudo
    return attribute_pixels(pixel, pseudo, student_probs.shape[1], valid=valid)


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Scalar CE + Dice of ``logits`` against ``target`` on the pixels where ``valid`` (labeled regions of
    mixed images)."""
    c = logits.shape[1]
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    ce = (ce * valid).sum() / valid.sum().clamp_min(1.0)
    dice = _soft_dice_loss(F.softmax(logits.float(), 1), target, c, valid).mean()
    return ce + dice
