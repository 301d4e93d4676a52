"""Quality guidance that wraps any method: QAR and quality-weighted pseudolabels (-QW).

:class:`QualityGuidance` is itself a :class:`~qgseg.ssl.SegmentationMethod`. It runs the wrapped
method's step unchanged and then, from the :class:`~qgseg.ssl.StepOutput` alone:

* **-QW**: scores each unlabeled term's pseudolabel with g on the view it belongs to (no gradient)
  and sets the term's per-sample weights ``w = q^T [q >= tau]`` (``qw_keep`` < 1: and among the batch's
  best-rated share); the term's loss becomes
  ``sum_i w_i l_i / sum_i w_i`` (0 when every weight is 0). For multi-class data the weights are
  per class by default: g predicts a Dice per class, and a pseudolabel whose left ventricle is
  right but whose right ventricle is wrong should keep teaching the left ventricle. ``qw_per_class:
  false`` uses the mean over classes for the whole sample. The weights *replace* any weights of the
  method's own (PL-C's confidence weights), so ``pl-c`` under -QW is PL-QW.
* **QAR**: adds ``lambda_qar(t) * (1 - mean g(x_u, softmax f(x_u)))``; the gradient flows through g
  (frozen, eval mode) into the student only. lambda_qar is 0 for the first ``qar_start`` of the run,
  then rises linearly over ``qar_rampup`` to ``qar_weight``.

Both combine; with neither the wrapper is not built at all (guidance off is the plain method).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import GuidanceConfig
from ..ssl.base import SegmentationMethod, StepOutput
from .critic import QualityCritic

__all__ = ["QualityGuidance", "quality_weights", "probe_metrics"]


def quality_weights(q: torch.Tensor, power: float, threshold: float, keep: float = 1.0) -> torch.Tensor:
    """``q^T * [q >= tau]`` element-wise; with ``keep`` < 1 also only the ``ceil(keep * B)`` highest q of
    the batch (dim 0; per class for ``(B, K)``; ties are kept).

    Why ``keep``: on images unlike its training cases g's scores can be off in level while still ranking
    the pseudolabels (``benchmarks/study_probe_hidden.py``: on CVC-ColonDB's unlabeled frames g's MAE is
    ~0.4 yet its best-rated half is clearly better), and a fixed tau then keeps almost everything.
    A share of the batch depends on the ranking only. Under DDP each rank ranks its own batch."""
    w = q.clamp(0, 1) ** power * (q >= threshold).to(q)
    if keep < 1.0 and q.shape[0] > 1:
        n = max(1, math.ceil(keep * q.shape[0]))
        cutoff = q.topk(n, dim=0).values[-1]  # the n-th highest per column
        w = w * (q >= cutoff).to(q)
    return w


def probe_metrics(predicted: np.ndarray, true: np.ndarray, power: float, threshold: float,
                  per_class: bool = True, weighted: bool = True, keep: float = 1.0) -> dict[str, float]:
    """How well g judged a set of pseudolabels whose true Dice is known: ``predicted`` and ``true``
    are ``(N, K)`` (cases x foreground classes).

    Returns ``probe_g_mae`` (mean |predicted - true|), ``probe_g_spearman`` (over every (case, class)
    pair; absent when either side is constant), ``probe_dice`` (mean true Dice of the pseudolabels)
    and, when ``weighted`` (-QW), ``probe_kept`` (share of weights > 0, per class or per case as
    ``per_class`` says, as in training) and ``probe_dice_weighted`` (the mean true Dice under the
    -QW weights; above ``probe_dice`` when the weights favour the better pseudolabels; NaN when
    every weight is 0). With 2 or more cases also ``probe_dice_top_half``, the mean true Dice of the
    half of the cases g rates highest (mean over classes), and ``probe_dice_oracle_half``, the same for
    the half that truly is best: how much of the gain of selecting pseudolabels g's ranking realises,
    whatever its calibration.
    """
    from scipy.stats import spearmanr

    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    out = {"probe_g_mae": float(np.abs(predicted - true).mean()), "probe_dice": float(true.mean())}
    if predicted.size > 2 and predicted.std() > 0 and true.std() > 0:
        out["probe_g_spearman"] = float(spearmanr(predicted.ravel(), true.ravel())[0])
    if len(true) >= 2:
        half = len(true) // 2
        case_true = true.mean(1)
        out["probe_dice_top_half"] = float(case_true[np.argsort(-predicted.mean(1), kind="stable")[:half]].mean())
        out["probe_dice_oracle_half"] = float(np.sort(case_true)[::-1][:half].mean())
    if weighted:
        q = predicted if per_class else np.repeat(predicted.mean(1, keepdims=True), predicted.shape[1], 1)
        w = quality_weights(torch.from_numpy(q), power, threshold, keep).numpy()
        out["probe_kept"] = float((w > 0).mean())
        out["probe_dice_weighted"] = float((w * true).sum() / w.sum()) if w.sum() > 0 else float("nan")
    return out


class QualityGuidance(SegmentationMethod):
    """Wraps ``method`` with QAR and/or -QW driven by ``critic`` (see the module docstring)."""

    def __init__(self, method: SegmentationMethod, critic: QualityCritic, cfg: GuidanceConfig) -> None:
        super().__init__(method.supervised_loss, method.num_classes, method.params, method.unlabeled_weight,
                         method.rampup)
        self.method = method
        self.cfg = cfg
        object.__setattr__(self, "critic", critic)  # not a sub-module: never trained, saved or put in train mode
        self.name = f"{method.name}{'-qw' if cfg.qw else ''}{'+qar' if cfg.qar else ''}"
        self.uses_unlabeled = method.uses_unlabeled or cfg.qar
        self.needs_strong_view = method.needs_strong_view
        self.makes_pseudolabels = method.makes_pseudolabels
        self.extra_students = method.extra_students

    def configure(self, total_iterations, generator):
        super().configure(total_iterations, generator)
        self.method.configure(total_iterations, generator)

    def setup(self, student):
        self.method.setup(student)

    def after_optimizer_step(self, nets, iteration):
        self.method.after_optimizer_step(nets, iteration)

    def pseudolabel_network(self, nets):
        return self.method.pseudolabel_network(nets)

    def qar_lambda(self, iteration: int) -> float:
        if not self.cfg.qar:
            return 0.0
        t = iteration / self.total_iterations
        if t < self.cfg.qar_start:
            return 0.0
        ramp = 1.0 if self.cfg.qar_rampup <= 0 else min(1.0, (t - self.cfg.qar_start) / self.cfg.qar_rampup)
        return self.cfg.qar_weight * ramp

    def qw_active(self, iteration: int) -> bool:
        return self.cfg.qw and iteration / self.total_iterations >= self.cfg.qw_start

    def step(self, nets, labeled, unlabeled, iteration):
        lam_qar = self.qar_lambda(iteration)
        self.method.want_student_probs = lam_qar > 0
        out: StepOutput = self.method.step(nets, labeled, unlabeled, iteration)
        logs = out.logs
        if self.cfg.qw:
            logs["lambda_qw"] = 1.0 if self.qw_active(iteration) else 0.0
        if self.qw_active(iteration):
            qs, kept = [], []
            for term in out.unlabeled:
                if term.pseudolabel is None or term.image is None:
                    continue
                q = self.critic.score_labels(term.image, term.batch, term.pseudolabel)  # (B, K)
                if not (self.cfg.qw_per_class and term.loss.ndim == 2):
                    q = q.mean(1)
                w = quality_weights(q, self.cfg.qw_power, self.cfg.qw_threshold, self.cfg.qw_keep)
                term.sample_weight = w
                qs.append(q.mean())
                kept.append((w > 0).float().mean())
            if qs:
                logs["q_pseudo"] = torch.stack(qs).mean()
                logs["kept"] = torch.stack(kept).mean()
        if self.cfg.qar:
            logs["lambda_qar"] = lam_qar
        if lam_qar > 0:
            probs = out.student_probs
            if probs is None:  # the method had no student softmax on the weak view with graph
                probs = F.softmax(nets["student"](unlabeled.image).float(), 1)
            q = self.critic.score_probs(unlabeled.image, unlabeled, probs, self.cfg.qar_truth_stopgrad)
            out.extra["qar"] = lam_qar * (1.0 - q.mean())
            logs["q_student"] = q.detach().mean()
        return out
