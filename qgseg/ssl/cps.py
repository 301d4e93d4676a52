"""Cross pseudo supervision (CPS): two students from different initialisations teach each other."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .base import SegmentationMethod, StepOutput, UnlabeledTerm
from .losses import pseudo_label_loss


@dataclass
class CPSParams:
    dice: bool = True  # CE + soft Dice against the other network's pseudolabel


class CrossPseudoSupervision(SegmentationMethod):
    """CPS: the hard prediction of each network on the unlabeled view supervises the other. Both are
    trained (``extra_students``), both get the supervised loss; network A (the student) is validated
    and exported."""

    name = "cps"
    uses_unlabeled = True
    makes_pseudolabels = True
    extra_students = ("student_b",)
    default_weight = 0.1
    Params = CPSParams

    def pseudolabel_network(self, nets):
        return nets["student_b"]  # network B's hard prediction is the student's (A's) pseudolabel

    def step(self, nets, labeled, unlabeled, iteration):
        a, b = nets["student"], nets["student_b"]
        sup = self.supervised(a(labeled.image), labeled.label) + self.supervised(b(labeled.image), labeled.label)
        logits_a, logits_b = a(unlabeled.image), b(unlabeled.image)
        pseudo_a, pseudo_b = logits_a.detach().argmax(1), logits_b.detach().argmax(1)
        lam = self.ramp(iteration)
        terms = [UnlabeledTerm("cps_a", pseudo_label_loss(logits_a, pseudo_b, dice=self.params.dice), lam, pseudo_b,
                               unlabeled.image, unlabeled),
                 UnlabeledTerm("cps_b", pseudo_label_loss(logits_b, pseudo_a, dice=self.params.dice), lam, pseudo_a,
                               unlabeled.image, unlabeled)]
        return StepOutput(sup, terms, student_probs=F.softmax(logits_a.float(), 1))
