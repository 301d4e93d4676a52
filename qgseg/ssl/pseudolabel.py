"""Pseudolabel self-training: PL-T (EMA teacher, confidence threshold) and PL-C (confidence weights)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .base import SegmentationMethod, StepOutput, UnlabeledTerm
from .losses import pseudo_label_loss
from .teacher import TeacherMethod


@dataclass
class PLTeacherParams:
    confidence: float = 0.9  # pixels whose teacher confidence is below this are ignored
    ema_decay: float = 0.99
    dice: bool = True  # CE + soft Dice against the pseudolabel (False: CE only)


class PseudoLabelTeacher(TeacherMethod):
    """PL-T: the EMA teacher's hard pseudolabel on the weak view supervises the student on the same
    view, on pixels where the teacher is at least ``confidence`` sure."""

    name = "pl-t"
    uses_unlabeled = True
    makes_pseudolabels = True
    default_weight = 1.0
    Params = PLTeacherParams

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        pseudo, valid = self.teacher_pseudolabel(unlabeled.image, self.params.confidence)
        logits = student(unlabeled.image)
        term = UnlabeledTerm("pseudo", pseudo_label_loss(logits, pseudo, valid, dice=self.params.dice),
                             self.ramp(iteration), pseudo, unlabeled.image, unlabeled)
        return StepOutput(sup, [term], {"pseudo_kept_px": valid.mean()},
                          student_probs=F.softmax(logits.float(), 1))


@dataclass
class PLConfidenceParams:
    power: float = 2.0  # per-sample weight = (mean max-probability) ** power
    dice: bool = True


class PseudoLabelConfidence(SegmentationMethod):
    """PL-C: the student's own hard pseudolabel on the weak view, each sample weighted by its mean
    confidence to the power 2, normalised over the batch: the self-referential counterpart of -QW.
    The weights go into the term's ``sample_weight``, the slot quality weighting fills, so ``pl-c``
    wrapped by -QW is PL-QW (quality weights *replace* the confidence weights)."""

    name = "pl-c"
    uses_unlabeled = True
    makes_pseudolabels = True
    default_weight = 1.0
    Params = PLConfidenceParams

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        logits = student(unlabeled.image)
        probs = F.softmax(logits.float(), 1)
        conf, pseudo = probs.detach().max(1)
        term = UnlabeledTerm("pseudo", pseudo_label_loss(logits, pseudo, dice=self.params.dice),
                             self.ramp(iteration), pseudo, unlabeled.image, unlabeled,
                             sample_weight=conf.flatten(1).mean(1) ** self.params.power)
        return StepOutput(sup, [term], {"confidence": conf.mean()}, student_probs=probs)
