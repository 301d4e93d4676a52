"""Evaluation metrics for a quality predictor: predicted vs true Dice.

Three views of the same predictions:

- regression accuracy (MAE, RMSE, Pearson, Spearman),
- MAE per bin of *true* Dice (errors usually differ between good and failed masks),
- failure detection: can ``1 - predicted Dice`` rank masks with true Dice below a threshold first?
  (AUROC and average precision, implemented here with numpy/scipy so that scikit-learn is not needed);
- and, for predictors that give one, whether the score's own uncertainty tells its large errors
  apart (:func:`uncertainty_metrics`: selective prediction, MAE of the most certain fraction).

Non-finite pairs (e.g. Dice undefined for a class absent from both masks) are dropped before scoring.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_THRESHOLDS",
    "regression_metrics",
    "mae_per_bin",
    "auroc",
    "average_precision",
    "failure_detection",
    "uncertainty_metrics",
    "quality_report",
    "format_quality_table",
]

DEFAULT_BINS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0000001)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8)


def _paired(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten two equally shaped arrays to 1-D float64 and drop pairs with a non-finite member."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and true {t.shape} must have the same shape")
    p, t = p.ravel(), t.ravel()
    keep = np.isfinite(p) & np.isfinite(t)
    return p[keep], t[keep]


def _tkey(t: float) -> str:
    """Threshold formatted for dict keys: 0.7 -> '0.7', 0.75 -> '0.75'."""
    return f"{t:g}"


# --------------------------------------------------------------------------- regression
def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Pearson r, Spearman rho and the number of pairs ``n``.

    Correlations are ``nan`` when fewer than 2 pairs remain or either side is constant; this is
    checked up front so scipy's ``ConstantInputWarning`` is never emitted (it spams training logs,
    e.g. when an untrained predictor outputs a constant).
    """
    p, t = _paired(pred, true)
    n = int(p.size)
    out: dict[str, float] = {"n": n, "mae": math.nan, "rmse": math.nan, "pearson": math.nan, "spearman": math.nan}
    if n == 0:
        return out
    err = p - t
    out["mae"] = float(np.mean(np.abs(err)))
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    if n >= 2 and np.ptp(p) > 0 and np.ptp(t) > 0:
        out["pearson"] = float(stats.pearsonr(p, t)[0])
        out["spearman"] = float(stats.spearmanr(p, t)[0])
    return out


def mae_per_bin(
    pred: np.ndarray, true: np.ndarray, bins: Sequence[float] = DEFAULT_BINS
) -> list[dict[str, float]]:
    """MAE of predictions grouped by bins of the *true* Dice, ``[lo, hi)`` intervals.

    The default last edge is slightly above 1 so that perfect masks (Dice = 1) fall in the top bin.
    Values outside all bins are not counted. ``mae`` is ``nan`` for empty bins.
    """
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be >= 2 strictly increasing edges, got {bins}")
    p, t = _paired(pred, true)
    err = np.abs(p - t)
    rows: list[dict[str, float]] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (t >= lo) & (t < hi)
        n = int(sel.sum())
        rows.append({"lo": float(lo), "hi": float(hi), "n": n, "mae": float(err[sel].mean()) if n else math.nan})
    return rows


# --------------------------------------------------------------------------- ranking metrics
def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (average ranks handle ties).

    Equals P(score_pos > score_neg) + 0.5 * P(score_pos == score_neg). ``nan`` if one class is absent.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(s, method="average")
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as in ``sklearn.metrics.average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over distinct score thresholds in decreasing order (tied
    scores enter together, no interpolation). ``nan`` if there are no positives or no negatives
    (sklearn would return 0 / 1 with a warning; nan keeps "undefined" visible in reports).
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Last index of each run of tied scores = one threshold of the precision-recall curve.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def failure_detection(
    pred: np.ndarray, true: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, float]:
    """Failure-detection quality for each threshold ``t``.

    Positives are masks with true Dice ``< t`` ("failures"); the score is ``1 - pred`` so a low
    predicted Dice flags a failure. Keys: ``auroc_<t>``, ``auprc_<t>`` (average precision) and
    ``positives_<t>`` (count), e.g. ``auroc_0.7``; metrics are ``nan`` when only one class is present.
    """
    p, t = _paired(pred, true)
    score = 1.0 - p
    out: dict[str, float] = {}
    for thr in thresholds:
        pos = t < thr
        k = _tkey(thr)
        out[f"auroc_{k}"] = auroc(pos, score)
        out[f"auprc_{k}"] = average_precision(pos, score)
        out[f"positives_{k}"] = int(pos.sum())
    return out


# --------------------------------------------------------------------------- combined report
def uncertainty_metrics(pred: np.ndarray, true: np.ndarray, uncertainty: np.ndarray,
                        reference: float | None = None, error_threshold: float = 0.1,
                        coverages: Sequence[float] = (0.5, 0.8, 0.9, 1.0)) -> dict[str, Any]:
    """Does a score's uncertainty point at its errors? All arrays have the same shape.

    Returns ``spearman_abs_error`` (rank correlation of uncertainty with ``|pred - true|``),
    ``auroc_error`` (uncertainty as a detector of errors above ``error_threshold``),
    ``mae_at_coverage`` (MAE of the most certain fraction of the scores, per coverage: the
    risk-coverage view of selective prediction) and, with ``reference``, the fraction of scores
    above it (``unsure_fraction``) and the MAE of the scores at or below / above it.
    """
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    p, t = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    if not (u.shape == p.shape == t.shape):
        raise ValueError(f"pred {p.shape}, true {t.shape} and uncertainty {u.shape} must have the same size")
    keep = np.isfinite(u) & np.isfinite(p) & np.isfinite(t)
    u, err = u[keep], np.abs(p[keep] - t[keep])
    out: dict[str, Any] = {"n": int(u.size), "error_threshold": error_threshold,
                           "spearman_abs_error": math.nan, "auroc_error": math.nan, "mae_at_coverage": {}}
    if u.size == 0:
        return out
    if u.size >= 2 and np.ptp(u) > 0 and np.ptp(err) > 0:
        out["spearman_abs_error"] = float(stats.spearmanr(u, err)[0])
    out["auroc_error"] = auroc(err > error_threshold, u)
    order = np.argsort(u, kind="stable")
    for c in coverages:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        keep_n = max(1, round(c * u.size))
        out["mae_at_coverage"][_tkey(c)] = float(err[order[:keep_n]].mean())
    if reference is not None:
        unsure = u > reference
        out["reference"] = float(reference)
        out["unsure_fraction"] = float(unsure.mean())
        out["mae_sure"] = float(err[~unsure].mean()) if (~unsure).any() else math.nan
        out["mae_unsure"] = float(err[unsure].mean()) if unsure.any() else math.nan
    return out


def _summary(pred: np.ndarray, true: np.ndarray, bins: Sequence[float], thresholds: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = regression_metrics(pred, true)
    out.update(failure_detection(pred, true, thresholds))
    out["bins"] = mae_per_bin(pred, true, bins)
    return out


def quality_report(
    pred: np.ndarray,
    true: np.ndarray,
    per_class: Mapping[int, str] | Sequence[str] | None = None,
    bins: Sequence[float] = DEFAULT_BINS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """All metrics for predictions of shape ``(N,)`` or ``(N, K)``.

    Args:
        pred, true: predicted and true Dice, same shape.
        per_class: names of the K foreground classes (column index -> name, or a list). With
            ``(N, K)`` input and no names, columns are called ``class_1 .. class_K`` (label values).
            Ignored for 1-D input.

    Returns:
        ``{"all": summary, "per_class": {name: summary}, "thresholds": [...]}`` where a summary holds
        the :func:`regression_metrics` and :func:`failure_detection` entries plus ``"bins"``
        (:func:`mae_per_bin`). ``"all"`` pools every (sample, class) pair (flattened).
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and true {t.shape} must have the same shape")
    if p.ndim not in (1, 2):
        raise ValueError(f"expected (N,) or (N, K) arrays, got shape {p.shape}")
    report: dict[str, Any] = {
        "all": _summary(p, t, bins, thresholds),
        "per_class": {},
        "thresholds": [float(x) for x in thresholds],
    }
    if p.ndim == 2:
        k = p.shape[1]
        if per_class is None:
            names = {i: f"class_{i + 1}" for i in range(k)}
        elif isinstance(per_class, Mapping):
            names = {int(i): str(n) for i, n in per_class.items()}
        else:
            names = dict(enumerate(str(n) for n in per_class))
        if sorted(names) != list(range(k)):
            raise ValueError(f"per_class must name exactly the {k} columns, got {per_class}")
        for i in range(k):
            report["per_class"][names[i]] = _summary(p[:, i], t[:, i], bins, thresholds)
    return report


def _fmt(x: Any) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.3f}"


def format_quality_table(report: Mapping[str, Any]) -> str:
    """Markdown tables for a :func:`quality_report`: one row per class (+ pooled), then MAE per bin."""
    thresholds = report.get("thresholds", DEFAULT_THRESHOLDS)
    rows = [("all", report["all"])] + list(report.get("per_class", {}).items())

    cols = ["n", "mae", "rmse", "pearson", "spearman"]
    for thr in thresholds:
        k = _tkey(thr)
        cols += [f"auroc_{k}", f"auprc_{k}", f"positives_{k}"]
    header = ["class"] + [c.replace("positives_", "pos<").replace("auroc_", "AUROC<").replace("auprc_", "AP<") for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, summary in rows:
        lines.append("| " + " | ".join([str(name)] + [_fmt(summary.get(c, math.nan)) for c in cols]) + " |")

    # MAE per true-Dice bin, one column per bin (cells: "mae (n)").
    bins = report["all"].get("bins", [])
    if bins:
        bin_names = [f"[{b['lo']:.1f}, {min(b['hi'], 1.0):.1f}{']' if b['hi'] > 1.0 else ')'}" for b in bins]
        lines += ["", "MAE per true-Dice bin:", "", "| class | " + " | ".join(bin_names) + " |"]
        lines.append("|" + "---|" * (len(bin_names) + 1))
        for name, summary in rows:
            cells = [f"{_fmt(b['mae'])} ({b['n']})" for b in summary.get("bins", [])]
            lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines)
