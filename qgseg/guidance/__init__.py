"""Quality guidance of semi-supervised training by a frozen quality predictor g.

* :class:`QualityCritic` - g with its own preprocessing, used on training tensors;
* :class:`QualityGuidance` - wraps any method: QAR (differentiable) and -QW (pseudolabel weights);
* :func:`build_run_method` - the method of a run config, guided when ``guidance.qar`` / ``guidance.qw``,
  after checking that g never saw a label this run treats as unlabeled (or a val/test case).
"""
from __future__ import annotations

from typing import Any

from .critic import QualityCritic
from .wrapper import QualityGuidance, probe_metrics, quality_weights

__all__ = ["QualityCritic", "QualityGuidance", "quality_weights", "probe_metrics", "build_run_method", "load_critic"]


def load_critic(cfg: Any, run_data: Any, device: Any = "cpu") -> QualityCritic:
    """Load ``cfg.guidance.predictor`` and run the leak check against ``run_data``."""
    from ..config import ConfigError
    from ..quality.leak import check_predictor_leak

    g = cfg.guidance
    if not g.predictor:
        raise ConfigError("guidance.qar / guidance.qw need a quality predictor: set guidance.predictor to a "
                         "checkpoint or run folder (or use `qgseg run`, which trains one first)")
    critic = QualityCritic.from_checkpoint(g.predictor, device)
    check_predictor_leak(critic.meta, run_data, critic.source, allow_unverified=g.allow_unverified_predictor)
    return critic


def build_run_method(cfg: Any, num_classes: int, run_data: Any = None, device: Any = "cpu",
                     critic: QualityCritic | None = None):
    """The run's method (``cfg.ssl``), wrapped by :class:`QualityGuidance` when guidance is on."""
    from ..ssl import build_method

    method = build_method(cfg, num_classes)
    if not cfg.guidance.enabled:
        return method
    critic = critic or load_critic(cfg, run_data, device)
    return QualityGuidance(method, critic, cfg.guidance)
