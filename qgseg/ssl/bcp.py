"""Bidirectional copy-paste (BCP) with a mean teacher, after labeled-only pre-training."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import StepOutput, UnlabeledTerm
from .losses import masked_dice_ce, pseudo_label_loss
from .mix import centre_box, paste
from .teacher import TeacherMethod


@dataclass
class BCPParams:
    pretrain: float = 0.2  # fraction of the iterations trained on labeled copy-paste only
    box_fraction: float = 2 / 3  # side of the pasted box relative to the image
    ema_decay: float = 0.99


class BidirectionalCopyPaste(TeacherMethod):
    """BCP: a box of a labeled image is pasted into an unlabeled one and a box of an unlabeled image
    into a labeled one; the student learns both mixed images against the truth (labeled pixels) and
    the EMA teacher's pseudolabel (unlabeled pixels, weight 0.5 as in the reference). The first
    ``pretrain`` of the run is labeled-only copy-paste; the teacher starts from the pre-trained student."""

    name = "bcp"
    uses_unlabeled = True
    makes_pseudolabels = True
    default_weight = 0.5
    default_rampup = 0.0
    Params = BCPParams

    def pretraining(self, iteration: int) -> bool:
        return iteration <= int(self.params.pretrain * self.total_iterations)

    def after_optimizer_step(self, nets, iteration):
        if self.pretraining(iteration):  # the teacher follows the student exactly until self-training
            self.teacher.load_state_dict(nets["student"].state_dict())
        else:
            super().after_optimizer_step(nets, iteration)

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        x_l, y_l = labeled.image, labeled.label
        b, spatial = y_l.shape[0], tuple(y_l.shape[1:])
        box = centre_box(b, spatial, self.generator, self.params.box_fraction).to(y_l.device)
        if self.pretraining(iteration):
            perm = torch.randperm(b, generator=self.generator).to(y_l.device)
            mixed = student(paste(x_l, x_l[perm], box))
            sup = self.supervised(mixed, paste(y_l, y_l[perm], box))
            out = StepOutput(sup, logs={"bcp_pretrain": 1.0})
            if self.want_student_probs:
                out.student_probs = self.student_probs_on(student, unlabeled.image)[1]
            return out
        b = min(b, unlabeled.image.shape[0])  # pairs of one labeled and one unlabeled image
        x_l, y_l, box, x_u = x_l[:b], y_l[:b], box[:b], unlabeled.image[:b]
        with torch.no_grad():
            pseudo = F.softmax(self.teacher(x_u).float(), 1).argmax(1)
        # inward: labeled box in the unlabeled image; outward: unlabeled box in another labeled image
        perm = torch.roll(torch.arange(b), 1).to(y_l.device)
        x_in, t_in = paste(x_u, x_l, box), paste(pseudo, y_l, box)
        x_out, t_out = paste(x_l[perm], x_u, box), paste(y_l[perm], pseudo, box)
        logits = student(torch.cat([x_in, x_out]))
        lab_region = torch.cat([box, 1 - box])  # where the target is ground truth
        sup = masked_dice_ce(logits, torch.cat([t_in, t_out]), lab_region)
        idx = torch.arange(b, device=y_l.device).view(-1, *([1] * len(spatial)))
        source = torch.cat([idx.expand_as(pseudo), idx.expand_as(pseudo)])  # both mixed images use x_u[i]
        unl = pseudo_label_loss(logits, torch.cat([t_in, t_out]), 1 - lab_region, source=source)[:b]
        term = UnlabeledTerm("copy_paste", unl, self.ramp(iteration), pseudo, x_u, unlabeled)
        out = StepOutput(sup, [term])
        if self.want_student_probs:
            out.student_probs = self.student_probs_on(student, unlabeled.image)[1]
        return out
