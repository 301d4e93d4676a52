"""The interface every (semi-)supervised method implements.

A method is a small object that turns one labeled and (optionally) one unlabeled batch into
a dict of losses; the training loop, data sampling and augmentation live elsewhere, and
quality guidance can wrap any method without the method knowing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Batch:
    """Images (B, C, *spatial) and, for labeled batches, labels (B, *spatial)."""

    image: torch.Tensor
    label: torch.Tensor | None = None


class SegmentationMethod(nn.Module):
    """Base class: ``compute_losses`` returns named losses; ``"loss"`` is what is optimised.

    Subclasses set :attr:`uses_unlabeled` when they need an unlabeled batch. A method is an
    ``nn.Module`` so that auxiliary networks (a teacher, a second student) are moved to the
    device and saved with the run.
    """

    uses_unlabeled: bool = False

    def __init__(self, supervised_loss: nn.Module) -> None:
        super().__init__()
        self.supervised_loss = supervised_loss

    def compute_losses(self, model: nn.Module, labeled: Batch, unlabeled: Batch | None,
                       iteration: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def supervised(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.supervised_loss(logits, label[:, None])


class Supervised(SegmentationMethod):
    """Labeled data only: the baseline every semi-supervised method must beat."""

    def compute_losses(self, model, labeled, unlabeled, iteration):
        loss = self.supervised(model(labeled.image), labeled.label)
        return {"loss": loss, "sup": loss.detach()}


def build_supervised_loss(name: str) -> nn.Module:
    """MONAI losses on logits with integer labels of shape (B, 1, *spatial)."""
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if name == "ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0, lambda_ce=1.0)
    raise ValueError(f"unknown loss '{name}' (dice_ce | dice | ce)")
