"""Segmentation methods: the supervised baseline and semi-supervised methods, each a small class.

========== ==================================================== ============================
name       method                                               unlabeled loss
========== ==================================================== ============================
supervised SUP: labeled data only                               none
pl-t       pseudolabels of an EMA teacher, confidence >= 0.9     CE + Dice
pl-c       the student's pseudolabels, confidence^2 weights      CE + Dice
mt         mean teacher                                         MSE of softmax
ua-mt      uncertainty-aware mean teacher (MC passes)            masked MSE of softmax
ict        interpolation consistency (mixup, Beta(1,1))          MSE of softmax
cps        cross pseudo supervision (two students)               CE + Dice, both ways
cl         pseudolabels + pixel contrastive loss                 CE + Dice + InfoNCE
fixmatch   weak-to-strong (UniMatch image branch, CutMix)        CE, confidence >= 0.95
bcp        bidirectional copy-paste with a mean teacher          CE + Dice on pasted regions
========== ==================================================== ============================

Knobs live in each method's ``Params`` dataclass and are set under ``ssl.params``.
"""
from __future__ import annotations

from typing import Any


from .base import (Batch, NoParams, SegmentationMethod, StepOutput, Supervised, UnlabeledBatch, UnlabeledTerm,
                   build_supervised_loss, sigmoid_rampup)
from .bcp import BidirectionalCopyPaste
from .contrastive import Contrastive
from .cps import CrossPseudoSupervision
from .fixmatch import FixMatch
from .mean_teacher import InterpolationConsistency, MeanTeacher, UncertaintyAwareMeanTeacher
from .pseudolabel import PseudoLabelConfidence, PseudoLabelTeacher

METHODS: dict[str, type[SegmentationMethod]] = {m.name: m for m in (
    Supervised, PseudoLabelTeacher, PseudoLabelConfidence, MeanTeacher, UncertaintyAwareMeanTeacher,
    InterpolationConsistency, CrossPseudoSupervision, Contrastive, FixMatch, BidirectionalCopyPaste)}


def method_params(name: str, params: dict[str, Any] | None) -> Any:
    """The ``Params`` dataclass of method ``name`` from an ``ssl.params`` mapping (validated: unknown
    knobs raise :class:`~qgseg.config.ConfigError` naming them and the valid ones)."""
    from ..config import from_dict

    cls = METHODS[name].Params
    return from_dict(cls, dict(params or {}), path="ssl.params")


def build_method(cfg: Any, num_classes: int) -> SegmentationMethod:
    """The method of a run config (``cfg.ssl``) with the supervised loss of ``cfg.train.loss``."""
    s = cfg.ssl
    cls = METHODS[s.method]
    return cls(build_supervised_loss(cfg.train.loss), num_classes, method_params(s.method, s.params),
               s.unlabeled_weight, s.rampup)


__all__ = ["Batch", "UnlabeledBatch", "UnlabeledTerm", "StepOutput", "SegmentationMethod", "Supervised", "NoParams",
           "METHODS", "build_method", "method_params", "build_supervised_loss", "sigmoid_rampup"]
