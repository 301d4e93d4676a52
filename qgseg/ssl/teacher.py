"""Methods with an exponential-moving-average (EMA) teacher: the shared part."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationMethod, ema_update


class TeacherMethod(SegmentationMethod):
    """A method that owns an EMA teacher of the student (``self.teacher``, an ``nn.Module``: moved to
    the device and saved in the checkpoint with the method; no gradients, always in eval mode...
    except where a method needs dropout, see UA-MT).

    The decay ramps as in the mean-teacher reference implementations: ``min(1 - 1 / (t + 1), decay)``,
    i.e. 0.5 at the first step, reaching ``params.ema_decay`` after ~100 steps.
    """

    def setup(self, student: nn.Module) -> None:
        self.teacher = self.make_teacher(student)
        self.teacher.eval()

    def train(self, mode: bool = True):  # the teacher stays in eval mode whatever the method's mode
        super().train(mode)
        if hasattr(self, "teacher"):
            self.teacher.eval()
        return self

    def ema_decay(self, iteration: int) -> float:
        return min(1.0 - 1.0 / (iteration + 1), float(self.params.ema_decay))

    @torch.no_grad()
    def teacher_pseudolabel(self, image: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's hard pseudolabel on ``image`` and the 0/1 mask of pixels it is ``confidence`` sure of."""
        conf, pseudo = F.softmax(self.teacher(image).float(), 1).max(1)
        return pseudo, (conf >= confidence).float()

    def pseudolabel_network(self, nets):
        return self.teacher if self.makes_pseudolabels else None

    def after_optimizer_step(self, nets, iteration):
        ema_update(self.teacher, nets["student"], self.ema_decay(iteration))
