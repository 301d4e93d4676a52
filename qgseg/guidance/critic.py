"""The frozen quality predictor as a critic of training-time masks.

:class:`QualityCritic` loads a predictor checkpoint and prepares its input itself, from the
segmenter's training tensors: back to stored intensities (the batch's ``raw`` affine), g's own
normalisation (it may differ from the segmenter's: the ColonDB predictor z-scores each image,
the segmenter may use x/255), resize to g's input size, foreground channels only; g's
mask-centred crop happens inside g. No caller matches preprocessing by hand. No flip test-time
augmentation here: one pass per score in the training loop.

g is frozen: parameters without gradient and eval mode at every call (no BatchNorm statistics
update, no dropout), and it is *not* a sub-module of the method, so the trainer's ``train()``
calls and checkpoints never touch it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.preprocess import resize_image
from ..quality.predictor import QualityPredictor
from ..ssl.base import Batch

__all__ = ["QualityCritic"]


class QualityCritic:
    """``score(image, batch, fg)`` -> predicted Dice ``(B, K)`` of foreground maps ``fg`` (soft or hard)."""

    def __init__(self, model: QualityPredictor, meta: dict[str, Any], device: str | torch.device = "cpu",
                 source: str = "") -> None:
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.meta = dict(meta)
        self.source = source
        self.classes = list(meta["classes"])
        self.image_size = [int(s) for s in meta["image_size"]]
        self.normalize = str(meta.get("normalize", "auto"))
        self.spatial_dims = int(meta["spatial_dims"])

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "QualityCritic":
        """From a quality checkpoint or run folder (``checkpoints/best.ckpt``), loaded weights-only."""
        from ..quality.scoring import load_predictor_checkpoint

        model, meta, path = load_predictor_checkpoint(path)
        return cls(model, meta, device, source=str(path))

    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_fg(self) -> int:
        return len(self.classes) - 1

    def check_compatible(self, classes: list[str], in_channels: int, spatial_dims: int) -> None:
        """Refuse a predictor made for other classes, channels or dimensionality, naming both sides."""
        problems = []
        if len(classes) != len(self.classes):
            problems.append(f"classes {self.classes} vs the run's {classes}")
        if int(self.meta.get("image_channels", in_channels)) != in_channels:
            problems.append(f"{self.meta.get('image_channels')} image channel(s) vs the run's {in_channels}")
        if self.spatial_dims != spatial_dims:
            problems.append(f"{self.spatial_dims}D vs the run's {spatial_dims}D network")
        if problems:
            raise ConfigError(f"guidance.predictor {self.source} does not fit this run: " + "; ".join(problems))

    def prepare_image(self, image: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Segmenter-normalised ``image`` (B, C, *S) of ``batch`` -> g's normalisation at g's size."""
        n = image.shape[0]
        raw = image
        if batch is not None and batch.raw_scale is not None:
            shape = (n, image.shape[1]) + (1,) * (image.ndim - 2)
            raw = image * batch.raw_scale[:n].view(shape).to(image) + batch.raw_shift[:n].view(shape).to(image)
        mode = self.normalize
        if mode == "auto":
            mode = "unit" if (batch is not None and batch.eight_bit) else "zscore"
        if mode == "unit":
            x = raw / 255.0
        elif mode == "zscore":
            dims = tuple(range(2, raw.ndim))
            x = (raw - raw.mean(dims, keepdim=True)) / raw.std(dims, keepdim=True, unbiased=False).clamp_min(1e-6)
        else:
            x = raw
        return resize_image(x.float(), self.image_size)

    def prepare_masks(self, fg: torch.Tensor, hard: bool) -> torch.Tensor:
        size = tuple(self.image_size)
        if tuple(fg.shape[2:]) == size:
            return fg.float()
        if hard:
            return F.interpolate(fg.float(), size=size, mode="nearest")
        return resize_image(fg.float(), size).clamp(0, 1)

    def _forward(self, image: torch.Tensor, masks: torch.Tensor, truth_stopgrad: bool) -> torch.Tensor:
        self.model.eval()  # whatever happened to it, g is used in eval mode only
        return self.model(image, masks, detach_truth=truth_stopgrad)

    @torch.no_grad()
    def score_labels(self, image: torch.Tensor, batch: Batch, labels: torch.Tensor) -> torch.Tensor:
        """Predicted Dice ``(B, K)`` of hard class maps ``labels`` (B, *S) (pseudolabels), no gradient."""
        fg = F.one_hot(labels.long(), len(self.classes)).movedim(-1, 1)[:, 1:].float()
        return self._forward(self.prepare_image(image.detach(), batch), self.prepare_masks(fg, True), False).float()

    def score_probs(self, image: torch.Tensor, batch: Batch, probs: torch.Tensor,
                    truth_stopgrad: bool = True) -> torch.Tensor:
        """Predicted Dice ``(B, K)`` of soft class probabilities ``probs`` (B, C, *S) with the graph kept,
        so a loss on it reaches the segmenter (QAR); g's own weights get no gradient."""
        return self._forward(self.prepare_image(image.detach(), batch), self.prepare_masks(probs[:, 1:], False),
                             truth_stopgrad).float()
