"""Consistency with an EMA teacher: MT, UA-MT and ICT (defaults of the SSL4MIS implementations)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import StepOutput, UnlabeledTerm, sigmoid_rampup
from .losses import consistency_loss
from .mix import mixup_pairs
from .teacher import TeacherMethod


def _noisy(x: torch.Tensor, gen: torch.Generator, std: float, clip: float) -> torch.Tensor:
    """SSL4MIS's teacher input noise: ``clamp(N(0, std), -clip, clip)``."""
    if std <= 0:
        return x
    noise = (torch.randn(x.shape, generator=gen) * std).clamp(-clip, clip)
    return x + noise.to(x)


@dataclass
class MTParams:
    ema_decay: float = 0.99  # 0.999 for long runs
    noise_std: float = 0.1  # teacher input noise
    noise_clip: float = 0.2


class MeanTeacher(TeacherMethod):
    """MT: MSE between the student's and the EMA teacher's softmax on the unlabeled weak view (the
    teacher sees it with a little noise); the weight ramps up with a sigmoid. The teacher's argmax is
    the pseudolabel that -QW judges."""

    name = "mt"
    uses_unlabeled = True
    makes_pseudolabels = True
    default_weight = 0.1
    Params = MTParams

    def teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.softmax(self.teacher(_noisy(x, self.generator, self.params.noise_std,
                                                 self.params.noise_clip)).float(), 1)

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        probs = F.softmax(student(unlabeled.image).float(), 1)
        target = self.teacher_probs(unlabeled.image)
        pseudo = target.argmax(1)
        term = UnlabeledTerm("consistency", consistency_loss(probs, target, pseudo), self.ramp(iteration),
                             pseudo, unlabeled.image, unlabeled)
        return StepOutput(sup, [term], student_probs=probs)


@dataclass
class UAMTParams(MTParams):
    passes: int = 8  # stochastic teacher passes (input noise; dropout too when the network has it)
    threshold_start: float = 0.75  # uncertainty threshold ramps from 0.75 to 1.0 times ln(C)


class UncertaintyAwareMeanTeacher(MeanTeacher):
    """UA-MT: MT whose consistency counts only pixels where the teacher is certain: the entropy of the
    mean of ``passes`` stochastic teacher predictions (input noise, MC dropout) below a threshold that
    ramps from 0.75 to 1.0 times ln(C)."""

    name = "ua-mt"
    Params = UAMTParams

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        probs = F.softmax(student(unlabeled.image).float(), 1)
        target = self.teacher_probs(unlabeled.image)
        # MC dropout: dropout layers of the teacher in train mode, normalisation layers frozen
        drop = [m for m in self.teacher.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        for m in drop:
            m.train()
        with torch.no_grad():
            mean = torch.stack([self.teacher_probs(unlabeled.image) for _ in range(self.params.passes)]).mean(0)
        for m in drop:
            m.eval()
        uncertainty = -(mean * torch.log(mean + 1e-6)).sum(1)
        ramp = sigmoid_rampup(iteration, self.rampup * self.total_iterations)
        threshold = (self.params.threshold_start + (1 - self.params.threshold_start) * ramp) * math.log(probs.shape[1])
        valid = (uncertainty < threshold).float()
        pseudo = target.argmax(1)
        term = UnlabeledTerm("consistency", consistency_loss(probs, target, pseudo, valid), self.ramp(iteration),
                             pseudo, unlabeled.image, unlabeled)
        return StepOutput(sup, [term], {"certain_px": valid.mean()}, student_probs=probs)


@dataclass
class ICTParams(MTParams):
    mixup_alpha: float = 1.0  # lambda ~ Beta(alpha, alpha)


class InterpolationConsistency(MeanTeacher):
    """ICT: the student's prediction on a mixup of two unlabeled images must match the same mixup of the
    teacher's predictions on each. The pseudolabel (for -QW) is the argmax of the mixed teacher
    prediction, on the mixed image."""

    name = "ict"
    Params = ICTParams

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        x = unlabeled.image
        perm, lam = mixup_pairs(x.shape[0], self.generator, self.params.mixup_alpha)
        lam_x = lam.to(x).view(-1, *([1] * (x.ndim - 1)))
        mixed = lam_x * x + (1 - lam_x) * x[perm]
        with torch.no_grad():
            t = F.softmax(self.teacher(x).float(), 1)
            target = lam_x * t + (1 - lam_x) * t[perm]
        probs = F.softmax(student(mixed).float(), 1)
        pseudo = target.argmax(1)
        term = UnlabeledTerm("consistency", consistency_loss(probs, target, pseudo), self.ramp(iteration),
                             pseudo, mixed, unlabeled)
        out = StepOutput(sup, [term])
        if self.want_student_probs:  # QAR judges the student on a real (unmixed) image
            out.student_probs = self.student_probs_on(student, x)[1]
        return out
