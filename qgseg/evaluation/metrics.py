"""Per-case segmentation metrics, their summary over a test set, and how they are reported.

The overlap and distance metrics themselves come from MONAI (``compute_dice``,
``compute_iou``, ``compute_hausdorff_distance``, ``compute_average_surface_distance``);
this module only fixes the conventions around them, because MONAI returns ``nan``/``inf``
for empty structures and a summary that silently drops those cases flatters a model that
misses structures altogether.

Conventions (each one is tested in ``tests/test_metrics.py``):

* Metrics are computed for every **foreground** class ``1 .. num_classes - 1`` on its
  binary mask; the background class 0 is never reported.
* ``dice`` and ``iou`` are in ``[0, 1]``. ``hd95`` is the 95th percentile of the symmetric
  Hausdorff distance between the two surfaces; ``asd`` the average symmetric surface
  distance.
* Distances are in **mm** when ``spacing`` (size of a pixel/voxel per spatial axis, same
  axis order as the arrays) is given, otherwise in **pixels** (voxels for 3D). The unit is
  given by :func:`distance_unit` and carried in each per-case row and in the summary
  (key ``"unit"``).
* Truth empty **and** prediction empty: ``dice = iou = 1``, ``hd95 = asd = 0`` (the model
  correctly found nothing).
* Exactly one of them empty: ``dice = iou = 0`` and ``hd95 = asd =`` the largest distance
  possible in the image, i.e. the diagonal of the image extent
  ``sqrt(sum((shape_i * spacing_i) ** 2))`` in the distance unit (see
  :func:`max_distance`), so a missed or hallucinated structure is penalised instead of
  being dropped from the mean as ``nan``.
* Summary statistics (:func:`summarize`) are the mean and the population standard
  deviation (``ddof=0``) over cases. The "mean over foreground" of a case is the average
  of its foreground classes; its mean and std are then taken over cases.

Per-case rows, as consumed by :func:`summarize` and :func:`write_results`, are dicts::

    {"case_id": "demo_0001", "unit": "pixels",
     "lesion": {"dice": 0.9, "iou": 0.82, "hd95": 1.4, "asd": 0.5}, ...}

:func:`case_row` builds one from :func:`case_metrics`' output.
"""
from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)

#: The metrics reported for each foreground class, in report order.
METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "asd")
#: Metrics that are distances (carry a unit).
DISTANCE_METRICS: frozenset[str] = frozenset({"hd95", "asd"})
#: Name used for the average over foreground classes in summaries and tables.
MEAN_FOREGROUND = "mean_foreground"

_DISPLAY = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "asd": "ASD"}


def distance_unit(spacing: Sequence[float] | None) -> str:
    """Unit of the distance metrics: ``"mm"`` with a spacing, ``"pixels"`` without."""
    return "mm" if spacing is not None else "pixels"


def max_distance(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Diagonal of the image extent (``shape * spacing``), the penalty for an empty structure."""
    sp = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=float)
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=float) * sp) ** 2)))


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "class_1", ...]`` for callers that have no class names."""
    return ["background"] + [f"class_{i}" for i in range(1, num_classes)]


def _check_inputs(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None,
    class_names: list[str] | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {pred.shape} does not match ground-truth shape {truth.shape}"
        )
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {pred.shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + foreground), got {num_classes}")
    for name, arr in (("prediction", pred), ("ground truth", truth)):
        if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
            if not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"{name} must be an integer label map, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} has labels outside [0, {num_classes - 1}]: "
                f"min {arr.min()}, max {arr.max()}"
            )
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(
            f"spacing {tuple(spacing)} has {len(spacing)} values for a {pred.ndim}D image"
        )
    names = list(class_names) if class_names is not None else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes: {names}")
    return pred.astype(np.int64), truth.astype(np.int64), names


def _binary_metrics(
    p: np.ndarray, t: np.ndarray, spacing: Sequence[float] | None
) -> dict[str, float]:
    """All metrics for one binary mask pair, with the empty-mask conventions applied."""
    p_any, t_any = bool(p.any()), bool(t.any())
    if not p_any and not t_any:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0}
    if p_any != t_any:
        # MONAI gives nan (dice/iou/hd) or inf (asd) here; penalise with the worst case.
        worst = max_distance(p.shape, spacing)
        return {"dice": 0.0, "iou": 0.0, "hd95": worst, "asd": worst}
    # (batch=1, channel=1, *spatial): a single foreground channel, so include_background=True.
    pt = torch.from_numpy(p)[None, None].float()
    tt = torch.from_numpy(t)[None, None].float()
    sp = None if spacing is None else [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument.
        warnings.simplefilter("ignore", FutureWarning)
        out = {
            "dice": compute_dice(pt, tt, include_background=True),
            "iou": compute_iou(pt, tt, include_background=True),
            "hd95": compute_hausdorff_distance(
                pt, tt, include_background=True, percentile=95, spacing=sp
            ),
            "asd": compute_average_surface_distance(
                pt, tt, include_background=True, symmetric=True, spacing=sp
            ),
        }
    return {k: float(v.reshape(-1)[0]) for k, v in out.items()}


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Dice, IoU, HD95 and ASD of every foreground class of one case.

    Args:
        pred: integer label map, ``(H, W)`` or ``(D, H, W)``.
        truth: integer label map of the same shape.
        num_classes: number of classes including background.
        spacing: pixel/voxel size per axis (same order as the arrays), in mm; ``None``
            reports distances in pixels (see :func:`distance_unit`).
        class_names: ``num_classes`` names, background first; defaults to
            :func:`default_class_names`.

    Returns:
        ``{class_name: {"dice", "iou", "hd95", "asd"}}`` for classes ``1..num_classes-1``,
        in class order. Empty-structure conventions are those of the module docstring.

    Raises:
        ValueError: on a shape mismatch (naming both shapes), labels out of range, or a
            spacing / class-name list of the wrong length.
    """
    pred, truth, names = _check_inputs(pred, truth, num_classes, spacing, class_names)
    return {
        names[c]: _binary_metrics(pred == c, truth == c, spacing) for c in range(1, num_classes)
    }


def case_row(
    case_id: str, metrics: dict[str, dict[str, float]], spacing: Sequence[float] | None = None
) -> dict[str, Any]:
    """One per-case row for :func:`summarize` / :func:`write_results`."""
    return {"case_id": case_id, "unit": distance_unit(spacing), **metrics}


def _foreground_names(rows: list[dict[str, Any]], class_names: Sequence[str]) -> list[str]:
    # class_names may be the full list (background first) or foreground only: background
    # never appears in a row, so keep the names the rows actually carry.
    names = [n for n in class_names if any(n in r for r in rows)]
    if not names:
        raise ValueError(f"none of the classes {list(class_names)} appear in the rows")
    return names


def _rows_unit(rows: list[dict[str, Any]]) -> str:
    units = {r.get("unit") for r in rows if r.get("unit") is not None}
    if len(units) > 1:
        # Averaging mm with pixels would be meaningless.
        raise ValueError(f"rows mix distance units {sorted(units)}")
    return units.pop() if units else "pixels"


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return {"mean": math.nan, "std": math.nan}
    # nan-aware in case rows come from elsewhere; case_metrics itself never yields nan.
    return {"mean": float(np.nanmean(arr)), "std": float(np.nanstd(arr))}


def summarize(rows: list[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Mean and std over cases of each metric, per class and averaged over foreground classes.

    Args:
        rows: per-case rows (see the module docstring / :func:`case_row`).
        class_names: class names; the background name may be included (it is ignored
            since rows never carry it).

    Returns:
        ``{"n": cases, "unit": "mm"|"pixels", "classes": {name: {metric: {"mean", "std"}}},
        "mean_foreground": {metric: {"mean", "std"}}}``.
    """
    if not rows:
        raise ValueError("summarize needs at least one per-case row")
    names = _foreground_names(rows, class_names)
    classes: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        classes[name] = {
            m: _stats([r[name][m] for r in rows if name in r]) for m in METRICS
        }
    # Per case, average its foreground classes first; then mean/std over cases.
    mean_fg = {
        m: _stats(
            [np.mean([r[n][m] for n in names if n in r]) for r in rows if any(n in r for n in names)]
        )
        for m in METRICS
    }
    return {"n": len(rows), "unit": _rows_unit(rows), "classes": classes, MEAN_FOREGROUND: mean_fg}


def write_results(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    out_dir: str | Path,
    prefix: str = "metrics",
) -> dict[str, Path]:
    """Write per-case CSV (one row per case x class), summary JSON and summary CSV.

    Returns:
        ``{"per_case_csv": ..., "summary_json": ..., "summary_csv": ...}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_case_csv": out / f"{prefix}_per_case.csv",
        "summary_json": out / f"{prefix}_summary.json",
        "summary_csv": out / f"{prefix}_summary.csv",
    }
    names = list(summary["classes"])
    with paths["per_case_csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "class", *METRICS, "unit"])
        for r in rows:
            for name in names:
                if name in r:
                    writer.writerow(
                        [r["case_id"], name, *(r[name][m] for m in METRICS),
                         r.get("unit", summary["unit"])]
                    )
    with paths["summary_json"].open("w") as fh:
        # allow_nan keeps a nan visible rather than crashing; it only arises from foreign rows.
        json.dump(summary, fh, indent=2)
    with paths["summary_csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["class", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "n", "unit"]
        )
        entries = [*summary["classes"].items(), (MEAN_FOREGROUND, summary[MEAN_FOREGROUND])]
        for name, stats in entries:
            writer.writerow(
                [name, *(stats[m][s] for m in METRICS for s in ("mean", "std")),
                 summary["n"], summary["unit"]]
            )
    return paths


def format_table(summary: dict[str, Any], title: str | None = None) -> str:
    """Plain-text table of mean ± std per class and over foreground classes."""
    unit = summary["unit"]
    unit_short = "px" if unit == "pixels" else unit
    headers = ["class"] + [
        f"{_DISPLAY[m]} ({unit_short})" if m in DISTANCE_METRICS else _DISPLAY[m] for m in METRICS
    ]

    def fmt(stats: dict[str, dict[str, float]], m: str) -> str:
        digits = 2 if m in DISTANCE_METRICS else 3
        return f"{stats[m]['mean']:.{digits}f} ± {stats[m]['std']:.{digits}f}"

    body = [[name] + [fmt(s, m) for m in METRICS] for name, s in summary["classes"].items()]
    body.append(["mean (foreground)"] + [fmt(summary[MEAN_FOREGROUND], m) for m in METRICS])
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(headers))
    out = []
    if title:
        out.append(title)
    out += [line(headers), rule, *(line(r) for r in body[:-1]), rule, line(body[-1])]
    out.append(f"n = {summary['n']} cases; distances in {unit}")
    return "\n".join(out)


def foreground_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of each foreground class of two label maps, without distances (fast: used for
    validation during training and for quality targets). Both empty -> 1, as :func:`case_metrics`."""
    out = np.empty(num_classes - 1)
    for c in range(1, num_classes):
        p, t = pred == c, truth == c
        denom = p.sum() + t.sum()
        out[c - 1] = 1.0 if denom == 0 else 2.0 * np.logical_and(p, t).sum() / denom
    return out
