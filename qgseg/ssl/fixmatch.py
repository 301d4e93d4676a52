"""FixMatch-style weak-to-strong consistency (UniMatch's image-level branch)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SegmentationMethod, StepOutput, UnlabeledTerm
from .losses import pseudo_label_loss
from .mix import cutmix_boxes, paste


@dataclass
class FixMatchParams:
    confidence: float = 0.95
    cutmix_p: float = 0.5  # probability of a CutMix box per strong sample
    dice: bool = False  # UniMatch: CE only on the unlabeled branch


class FixMatch(SegmentationMethod):
    """The student's hard prediction on the weak view supervises its prediction on the strong view
    (photometric augmentation + CutMix with another unlabeled sample), on pixels where the weak
    prediction is at least ``confidence`` sure. A pasted pixel's loss belongs to the sample it came
    from (its pseudolabel defined the target), which is what -QW weights."""

    name = "fixmatch"
    uses_unlabeled = True
    needs_strong_view = True
    makes_pseudolabels = True
    default_weight = 1.0
    default_rampup = 0.0
    Params = FixMatchParams

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        weak_probs, graph_probs = self.student_probs_on(student, unlabeled.image)
        conf, pseudo = weak_probs.max(1)
        b, spatial = pseudo.shape[0], tuple(pseudo.shape[1:])
        box = cutmix_boxes(b, spatial, self.generator, p=self.params.cutmix_p).to(pseudo.device)
        perm = torch.randperm(b, generator=self.generator).to(pseudo.device)
        strong = paste(unlabeled.strong, unlabeled.strong[perm], box)
        target = paste(pseudo, pseudo[perm], box)
        valid = paste(conf, conf[perm], box) >= self.params.confidence
        source = paste(torch.arange(b, device=pseudo.device).view(-1, *([1] * len(spatial))).expand_as(pseudo),
                       perm.view(-1, *([1] * len(spatial))).expand_as(pseudo), box)
        loss = pseudo_label_loss(student(strong), target, valid.float(), source=source, dice=self.params.dice)
        term = UnlabeledTerm("weak_to_strong", loss, self.ramp(iteration), pseudo, unlabeled.image, unlabeled)
        return StepOutput(sup, [term], {"pseudo_kept_px": valid.float().mean()}, student_probs=graph_probs)
