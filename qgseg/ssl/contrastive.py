"""CL: pseudolabels plus a pixel-level contrastive loss on the student's decoder features."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import StepOutput, UnlabeledTerm
from .losses import pseudo_label_loss
from .teacher import TeacherMethod


class DecoderFeatures:
    """Captures the decoder features that feed a network's last layer: the input of the first module
    (in forward order) that maps to ``num_classes`` channels from another width (MONAI UNet: the top
    up-sampling convolution; U-Net++ / Attention U-Net: the final convolution)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.value: torch.Tensor | None = None
        self._handles: list = []
        self._found = False

    def attach(self, model: nn.Module) -> None:
        convs = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        for m in model.modules():
            if isinstance(m, convs) and m.out_channels == self.num_classes and m.in_channels != self.num_classes:
                self._handles.append(m.register_forward_hook(self._hook))
        if not self._handles:
            raise ValueError("cl: found no layer mapping decoder features to the class logits in this network")

    def _hook(self, module, inputs, output) -> None:
        if not self._found:  # the first such layer of this forward pass
            self.value = inputs[0]
            self._found = True

    def reset(self) -> None:
        self.value, self._found = None, False


@dataclass
class CLParams:
    confidence: float = 0.9
    ema_decay: float = 0.99
    temperature: float = 0.1
    negatives: int = 256
    anchors: int = 64  # anchor pixels per class and sample
    contrast_weight: float = 0.1
    dice: bool = True


class Contrastive(TeacherMethod):
    """CL: PL-T's pseudolabel loss plus an InfoNCE loss on the student's decoder features of the
    unlabeled view: each confident anchor pixel is pulled to its pseudo-class prototype (mean feature of
    the confident pixels of that class, detached) against ``negatives`` confident pixels of other classes."""

    name = "cl"
    uses_unlabeled = True
    makes_pseudolabels = True
    default_weight = 1.0
    Params = CLParams

    def setup(self, student: nn.Module) -> None:
        super().setup(student)
        self.features = DecoderFeatures(self.num_classes)
        self.features.attach(student)

    def contrast(self, feats: torch.Tensor, pseudo: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-sample InfoNCE ``(B,)`` on L2-normalised features (B, F, *s)."""
        b = feats.shape[0]
        size = feats.shape[2:]
        pseudo = F.interpolate(pseudo[:, None].float(), size=size, mode="nearest")[:, 0].long()
        valid = F.interpolate(valid[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
        f = F.normalize(feats.float().flatten(2), dim=1).transpose(1, 2)  # (B, N, F)
        lab, ok = pseudo.flatten(1), valid.flatten(1)
        losses = []
        pool_f, pool_c = f[ok].detach(), lab[ok]
        for i in range(b):
            terms = []
            for c in lab[i][ok[i]].unique().tolist():
                own = ok[i] & (lab[i] == c)
                others = pool_c != c
                if own.sum() == 0 or others.sum() == 0:
                    continue
                idx = torch.nonzero(own)[:, 0]
                pick = idx[torch.randperm(idx.numel(), generator=self.generator)[: self.params.anchors].to(idx.device)]
                anchors = f[i, pick]  # (A, F)
                proto = F.normalize(pool_f[pool_c == c].mean(0), dim=0)
                neg_idx = torch.nonzero(others)[:, 0]
                neg = pool_f[neg_idx[torch.randint(0, neg_idx.numel(), (self.params.negatives,),
                                                   generator=self.generator).to(neg_idx.device)]]
                logits = torch.cat([anchors @ proto[:, None], anchors @ neg.t()], 1) / self.params.temperature
                terms.append(F.cross_entropy(logits, torch.zeros(len(pick), dtype=torch.long, device=logits.device)))
            losses.append(torch.stack(terms).mean() if terms else feats.sum() * 0.0)
        return torch.stack(losses)

    def step(self, nets, labeled, unlabeled, iteration):
        student = nets["student"]
        sup = self.supervised(student(labeled.image), labeled.label)
        pseudo, valid = self.teacher_pseudolabel(unlabeled.image, self.params.confidence)
        self.features.reset()
        logits = student(unlabeled.image)
        feats = self.features.value
        lam = self.ramp(iteration)
        pl = pseudo_label_loss(logits, pseudo, valid, dice=self.params.dice)
        con = self.contrast(feats, pseudo, valid) * self.params.contrast_weight
        # one term: the contrastive part is this sample's too, so -QW weights both together
        term = UnlabeledTerm("pseudo_contrast", pl + con[:, None] / pl.shape[1], lam, pseudo, unlabeled.image,
                             unlabeled)
        return StepOutput(sup, [term], {"contrast": con.mean()}, student_probs=F.softmax(logits.float(), 1))
