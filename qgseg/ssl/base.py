"""The interface every (semi-)supervised method implements.

A method is a small ``nn.Module`` that turns one labeled and (optionally) one unlabeled batch
into a :class:`StepOutput`: the supervised loss, and one :class:`UnlabeledTerm` per unlabeled
loss with everything a guidance wrapper needs to judge it *without the method knowing*:

* the per-sample loss, ``(B,)`` or ``(B, K)`` per foreground class, graph attached and not yet
  multiplied by the ramp weight;
* the pseudolabel it was computed against (hard class map, detached) and the image view that
  pseudolabel belongs to, so the quality predictor judges it on the same geometry;
* the student's soft probabilities on an unlabeled view (for quality-aware regularisation);
* the ramp weight lambda(t).

The training loop (:class:`qgseg.engine.segmentation.SegmentationTrainer`) is written once. It
gives the method a ``nets`` mapping of every *trained* network (``"student"`` and the names in
:attr:`SegmentationMethod.extra_students`, each set up by Fabric: device, precision, DDP, one
optimiser over all of them) and calls :meth:`SegmentationMethod.after_optimizer_step` after
every optimiser step (EMA teachers). Teachers are owned by the method (sub-modules, so they are
moved to the device and saved in the checkpoint with it) and never receive gradients.

**Which network is validated and exported: the student, for every method** (CPS: the first of its
two networks). Teachers are a training device; ``train.ema`` averages the student's weights for
validation in the same way for every method, so the comparison stays fair.

How to add a method: subclass :class:`SegmentationMethod`, declare its knobs in a ``Params``
dataclass (they become ``ssl.params`` keys, validated), implement :meth:`step`, and register it
in :data:`qgseg.ssl.METHODS`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Batch:
    """Images (B, C, *spatial) and, for labeled batches, labels (B, *spatial).

    ``raw_scale``/``raw_shift`` (B, C): the affine map back to the stored intensities,
    ``raw = image * raw_scale + raw_shift`` (per sample and channel), so a quality predictor with
    another normalisation than the segmenter's can prepare its own input. ``eight_bit``: whether
    the images were 8-bit files (decides ``normalize: auto``).
    """

    image: torch.Tensor
    label: torch.Tensor | None = None
    raw_scale: torch.Tensor | None = None
    raw_shift: torch.Tensor | None = None
    eight_bit: bool = False

    def raw(self, image: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` (default: this batch's) back in stored intensities."""
        x = self.image if image is None else image
        if self.raw_scale is None:
            return x
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        return x * self.raw_scale.view(shape).to(x) + self.raw_shift.view(shape).to(x)


@dataclass
class UnlabeledBatch(Batch):
    """An unlabeled batch: ``image`` is the weak view (flips, rotation, scaling); ``strong`` the same
    geometry with photometric augmentation (colour, brightness, contrast, blur, noise), present when
    the method asks for it (:attr:`SegmentationMethod.needs_strong_view`)."""

    strong: torch.Tensor | None = None


@dataclass
class UnlabeledTerm:
    """One unlabeled loss of a step, per sample, with what guidance needs to judge it.

    Attributes:
        name: log name (``"pseudo"``, ``"consistency"``, ...).
        loss: ``(B,)``, or ``(B, K)`` per foreground class whose sum over K is the sample's loss;
            graph attached, not multiplied by ``weight``.
        weight: the ramp weight lambda(t) of this term.
        pseudolabel: ``(B, *spatial)`` hard class map the loss was computed against (detached);
            ``None`` for losses without one (then quality weighting leaves the term alone).
        image: ``(B, C, *spatial)`` the view ``pseudolabel`` belongs to (segmenter-normalised).
        batch: the unlabeled batch the view comes from (to undo the segmenter's normalisation).
    """

    name: str
    loss: torch.Tensor
    weight: float
    pseudolabel: torch.Tensor | None = None
    image: torch.Tensor | None = None
    batch: Batch | None = None
    sample_weight: torch.Tensor | None = None  # (B,) or (B, K), set by quality weighting

    def reduced(self) -> torch.Tensor:
        """Scalar loss: the batch mean, or the ``sample_weight``-weighted mean normalised by the sum of
        the weights (per class for ``(B, K)``; a class whose weights are all 0 contributes 0)."""
        loss = self.loss
        if self.sample_weight is None:
            return loss.sum(-1).mean() if loss.ndim == 2 else loss.mean()
        w = self.sample_weight.to(loss)
        if w.ndim == 1 and loss.ndim == 2:
            w = w[:, None].expand_as(loss)
        elif w.ndim == 2 and loss.ndim == 1:
            w = w.mean(1)
        total = w.sum(0)
        out = (w * loss).sum(0) / total.clamp_min(1e-12)
        out = torch.where(total > 0, out, torch.zeros_like(out))
        return out.sum()


@dataclass
class StepOutput:
    """What :meth:`SegmentationMethod.step` returns. ``extra``: further scalar losses, already
    weighted (e.g. QAR added by guidance). ``student_probs``: the student's softmax on the
    unlabeled weak view with graph (only when asked through ``want_student_probs``)."""

    supervised: torch.Tensor
    unlabeled: list[UnlabeledTerm] = field(default_factory=list)
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    student_probs: torch.Tensor | None = None

    def total(self) -> torch.Tensor:
        loss = self.supervised
        for term in self.unlabeled:
            if term.weight:
                loss = loss + term.weight * term.reduced()
        for value in self.extra.values():
            loss = loss + value
        return loss

    def loss_dict(self) -> dict[str, torch.Tensor]:
        """``{"loss": total, "sup": ..., <term>: ..., <logs>}`` for the progress bar and the logs."""
        out: dict[str, torch.Tensor] = {"loss": self.total(), "sup": self.supervised.detach()}
        for term in self.unlabeled:
            out[term.name] = term.reduced().detach()
        out.update({k: v.detach() for k, v in self.extra.items()})
        if self.unlabeled:
            out["lambda"] = torch.tensor(float(self.unlabeled[0].weight))
        for k, v in self.logs.items():
            out[k] = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
        return out


@dataclass
class NoParams:
    """A method without knobs."""


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` for t = current / length in [0, 1] (Laine & Aila; used by MT, UA-MT, ...)."""
    if length <= 0:
        return 1.0
    t = min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


class SegmentationMethod(nn.Module):
    """Base class of every method; see the module docstring.

    Class attributes a subclass sets:
        name: the ``ssl.method`` key.
        uses_unlabeled: needs an unlabeled batch.
        needs_strong_view: the unlabeled batch must carry a strong (photometric) view.
        makes_pseudolabels: its unlabeled terms carry pseudolabels (so ``-QW`` applies).
        extra_students: names of further *trained* networks (same architecture, other seed).
        Params: dataclass of its knobs (``ssl.params``).
    """

    name: ClassVar[str] = "base"
    uses_unlabeled: ClassVar[bool] = False
    needs_strong_view: ClassVar[bool] = False
    makes_pseudolabels: ClassVar[bool] = False
    extra_students: ClassVar[tuple[str, ...]] = ()
    default_weight: ClassVar[float] = 1.0  # lambda_max when ssl.unlabeled_weight is not set
    default_rampup: ClassVar[float] = 0.4  # ramp-up fraction when ssl.rampup is not set
    Params: ClassVar[type] = NoParams

    def __init__(self, supervised_loss: nn.Module, num_classes: int = 2, params: Any = None,
                 unlabeled_weight: float | None = None, rampup: float | None = None) -> None:
        super().__init__()
        self.supervised_loss = supervised_loss
        self.num_classes = num_classes
        self.params = params if params is not None else self.Params()
        self.unlabeled_weight = self.default_weight if unlabeled_weight is None else unlabeled_weight
        self.rampup = self.default_rampup if rampup is None else rampup
        self.total_iterations = 1
        self.generator: torch.Generator | None = None
        # set by guidance (QAR): return the student's softmax on the weak view with its graph
        self.want_student_probs = False

    # ---------------------------------------------------------------- set-up and hooks
    def configure(self, total_iterations: int, generator: torch.Generator) -> None:
        """Called once by the trainer: the schedule length and the run's random generator (its state
        is checkpointed, so every random draw of a method made with it resumes exactly)."""
        self.total_iterations = max(1, int(total_iterations))
        self.generator = generator

    def setup(self, student: nn.Module) -> None:
        """Create teachers from the (raw, not yet Fabric-wrapped) student. Default: nothing."""

    def after_optimizer_step(self, nets: dict[str, nn.Module], iteration: int) -> None:
        """Called after every optimiser step with the raw trained networks (EMA updates)."""

    def step(self, nets: dict[str, nn.Module], labeled: Batch, unlabeled: UnlabeledBatch | None,
             iteration: int) -> StepOutput:
        raise NotImplementedError

    def pseudolabel_network(self, nets: dict[str, nn.Module]) -> nn.Module | None:
        """The network whose prediction is the student's pseudolabel (used by the pseudolabel probe of
        guided runs, :meth:`~qgseg.engine.segmentation.SegmentationTrainer.probe_pseudolabels`).
        Default: the student itself (self-training: PL-C, FixMatch) for a method that makes
        pseudolabels, else ``None``; a teacher method returns its teacher, CPS the other network."""
        return nets["student"] if self.makes_pseudolabels else None

    # ---------------------------------------------------------------- helpers for subclasses
    def ramp(self, iteration: int) -> float:
        """lambda(t) = unlabeled_weight * sigmoid ramp-up over ``rampup`` of the iterations."""
        return self.unlabeled_weight * sigmoid_rampup(iteration, self.rampup * self.total_iterations)

    def supervised(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.supervised_loss(logits, label[:, None])

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def make_teacher(self, student: nn.Module) -> nn.Module:
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def student_probs_on(self, student: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax of the student on ``image``: detached, plus the graph-attached version when guidance
        asked for it (``want_student_probs``); without that request no graph is built."""
        if self.want_student_probs:
            probs = F.softmax(student(image).float(), dim=1)
            return probs.detach(), probs
        with torch.no_grad():
            return F.softmax(student(image).float(), dim=1), None


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student`` (buffers such as BN statistics copied
    the same way; integer buffers copied)."""
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values()):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1 - decay)
        else:
            t.copy_(s)


class Supervised(SegmentationMethod):
    """SUP: labeled data only, on the same schedule; the baseline every semi-supervised method must beat."""

    name = "supervised"

    def step(self, nets, labeled, unlabeled, iteration):
        return StepOutput(self.supervised(nets["student"](labeled.image), labeled.label))


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
