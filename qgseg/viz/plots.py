"""Training curves and segmentation overlays (matplotlib, headless).

Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot, so
importing qgseg does not change the backend of a user's notebook or GUI session.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

_COLORS = np.array([[0, 0, 0], [0.1, 0.9, 0.1], [1.0, 0.2, 0.2], [0.2, 0.5, 1.0], [1.0, 0.8, 0.1],
                    [0.8, 0.2, 1.0], [0.1, 0.9, 0.9]])


def read_csv_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Fabric's CSV log (one row per logged step) -> {metric: [(step, value), ...]}."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            step = int(float(row.get("step", 0) or 0))
            for key, value in row.items():
                if key == "step" or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_training_curves(log_csv: Path, out_path: Path, title: str = "training") -> Path:
    """Loss curves (left) and validation metrics (right) from the run's CSV log."""
    series = read_csv_log(log_csv)
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax_l, ax_v = fig.subplots(1, 2)
    for key, pts in sorted(series.items()):
        if not pts or key == "train/lr":
            continue
        steps, values = zip(*pts)
        if key.startswith("train/"):
            ax_l.plot(steps, values, label=key[6:])
        elif key.startswith("val/"):
            ax_v.plot(steps, values, marker="o", ms=3, label=key[4:])
    ax_l.set(xlabel="iteration", ylabel="loss", title=f"{title}: training losses")
    ax_v.set(xlabel="iteration", title=f"{title}: validation")
    for ax in (ax_l, ax_v):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    return out_path


def _display_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1] with a robust per-image contrast stretch."""
    img = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    img = np.moveaxis(img.astype(np.float32), 0, -1)
    lo, hi = np.percentile(img, (1, 99))
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def overlay(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """RGB picture: the image with truth outlines in each class colour (green for class 1) and
    prediction outlines, drawn thicker, in the complementary colour (magenta for class 1)."""
    rgb = _display_image(image)
    for mask, is_pred in ((pred, True), (truth, False)):
        if mask is None:
            continue
        for c in np.unique(mask):
            if c == 0:
                continue
            edge = _outline(mask == c)
            colour = _COLORS[int(c) % len(_COLORS)]
            if is_pred:
                edge = ndimage.binary_dilation(edge)
                colour = 1.0 - colour
            rgb[edge] = colour
    return rgb


def save_overlay(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None, path: Path,
                 title: str = "", legend: str = "truth: green outline, prediction: magenta outline") -> Path:
    """Save an overlay PNG; for 3D cases the slice with the most foreground is shown."""
    if image.ndim == 4:
        ref = truth if truth is not None else pred
        k = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1))) if ref is not None else image.shape[1] // 2
        image = image[:, k]
        truth = truth[k] if truth is not None else None
        pred = pred[k] if pred is not None else None
        title = f"{title} (slice {k})"
    fig = Figure(figsize=(4, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(overlay(image, truth, pred))
    ax.set_title(f"{title}\n{legend}", fontsize=8)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
