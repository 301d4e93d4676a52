"""Plots for quality-predictor evaluation (predicted vs true Dice).

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly instead
of ``pyplot``: no global backend switch, no display needed, no figure-manager leaks in long runs,
and safe to call from worker threads.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qgseg.quality.metrics import regression_metrics

__all__ = ["predicted_dice_histogram", "reliability_plot", "scatter_pred_vs_true"]


def _prepare(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and true {t.shape} must have the same shape")
    return p, t


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches an Agg canvas to the figure
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def scatter_pred_vs_true(
    pred: np.ndarray,
    true: np.ndarray,
    path: str | Path,
    title: str | None = None,
    categories: Sequence[str] | None = None,
) -> Path:
    """Scatter of predicted (y) against true (x) Dice with the identity line; returns ``path``.

    Args:
        pred, true: ``(N,)`` or ``(N, K)``; 2-D input is pooled over classes.
        categories: optional label per sample (length N, e.g. the perturbation that produced the
            mask) to colour points by; with ``(N, K)`` input each label applies to the whole row.
        title: prefix of the title; MAE and Spearman are always appended.
    """
    p, t = _prepare(pred, true)
    cats: np.ndarray | None = None
    if categories is not None:
        cats = np.asarray([str(c) for c in categories])
        if cats.shape[0] != p.shape[0]:
            raise ValueError(f"categories has {cats.shape[0]} entries for {p.shape[0]} samples")
        if p.ndim == 2:
            cats = np.repeat(cats, p.shape[1])  # row-major ravel below -> each sample's K entries
    p, t = p.ravel(), t.ravel()
    m = regression_metrics(p, t)

    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="identity")
    # Small, semi-transparent markers: evaluation sets often have thousands of masks.
    style = {"s": 10, "alpha": 0.6, "linewidths": 0}
    if cats is None:
        ax.scatter(t, p, **style)
    else:
        for c in dict.fromkeys(cats):  # stable order of first appearance
            sel = cats == c
            ax.scatter(t[sel], p[sel], label=f"{c} ({int(sel.sum())})", **style)
    ax.legend(loc="upper left", fontsize=8, markerscale=1.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("true Dice")
    ax.set_ylabel("predicted Dice")
    stats_txt = f"MAE={m['mae']:.3f}, Spearman={m['spearman']:.3f}, n={m['n']}"
    ax.set_title(f"{title}\n{stats_txt}" if title else stats_txt, fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def reliability_plot(pred: np.ndarray, true: np.ndarray, path: str | Path, bins: int = 10) -> Path:
    """Reliability diagram: mean true Dice per bin of predicted Dice vs bin centre; returns ``path``.

    A calibrated predictor lies on the identity line. The lower panel shows how many predictions
    fall in each bin (counts are also written next to the points), because sparse bins are noisy.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, t = _prepare(pred, true)
    p, t = p.ravel(), t.ravel()
    keep = np.isfinite(p) & np.isfinite(t)
    p, t = p[keep], t[keep]

    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    # Predictions are sigmoid outputs in [0, 1]; clip so 1.0 lands in the last bin.
    idx = np.clip(np.digitize(np.clip(p, 0.0, 1.0), edges[1:-1]), 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sums = np.bincount(idx, weights=t, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_true = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    fig = Figure(figsize=(5.5, 6.5))
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration")
    filled = counts > 0
    ax.plot(centres[filled], mean_true[filled], marker="o", label="mean true Dice")
    for c, y, n in zip(centres[filled], mean_true[filled], counts[filled]):
        ax.annotate(str(int(n)), (c, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("mean true Dice")
    ax.set_title(f"Reliability (n={int(p.size)}, {bins} bins)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)

    axc.bar(centres, counts, width=1.0 / bins * 0.9, color="0.6")
    axc.set_xlim(0, 1)
    axc.set_xlabel("predicted Dice (bin centre)")
    axc.set_ylabel("count")
    return _save(fig, path)


def predicted_dice_histogram(pred: np.ndarray, classes: Sequence[str], path: str | Path,
                             flag_below: float | None = None, bins: int = 20) -> Path:
    """Histogram of predicted Dice ``(N, K)`` per class (no ground truth needed), with the review
    threshold drawn when given; returns ``path``. Shows at a glance how many masks look doubtful."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    if p.shape[1] != len(classes):
        raise ValueError(f"pred has {p.shape[1]} class columns, classes {list(classes)}")
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for j, name in enumerate(classes):
        col = p[:, j][np.isfinite(p[:, j])]
        ax.hist(np.clip(col, 0, 1), bins=edges, alpha=0.6 if len(classes) > 1 else 0.9, label=f"{name} (n={col.size})")
    if flag_below is not None:
        ax.axvline(flag_below, color="crimson", linestyle="--", linewidth=1.2, label=f"review below {flag_below:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted Dice")
    ax.set_ylabel("masks")
    ax.set_title("Predicted quality of the scored masks", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
