"""Phase 1: the segmentation-quality predictor g(image, mask) -> Dice.

Heavy submodules (training, evaluation) are imported lazily so ``import qgseg.quality`` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "QualityPredictor": "predictor",
    "QualityScorer": "scoring",
    "load_quality_predictor": "scoring",
    "score_folder": "scoring",
    "QualityTrainer": "training",
    "train_quality_predictor": "training",
    "evaluate_quality": "evaluation",
    "train_weak_snapshots": "weak",
    "predict_weak": "weak",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
