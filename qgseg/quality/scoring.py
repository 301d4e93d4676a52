"""Using a trained quality predictor: load a checkpoint, prepare (image, mask) pairs, score them.

The same preprocessing (normalisation, resize to the predictor's input size, 3D volumes as 2D
slices) is used by training, evaluation and ``qgseg quality score``, so a predictor always sees
its inputs prepared the same way. Everything a checkpoint needs to be used is in its ``meta``
(see :meth:`qgseg.quality.training.QualityTrainer.checkpoint_meta`).
"""
from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.case import Case
from ..data.io import DataError
from ..data.preprocess import (
    prepare_network_input,
    resize_image,
    resize_label,
    slice_axis,
)
from ..evaluation.inference import match_channels
from .predictor import QualityPredictor, labels_to_fg_onehot

if TYPE_CHECKING:
    from ..per_case import CaseFailures

__all__ = [
    "QualityScorer",
    "load_quality_predictor",
    "load_predictor_checkpoint",
    "label_to_fg",
    "resize_masks",
    "hard_fg",
    "score_folder",
    "write_scores_csv",
    "write_qc_report",
    "flagged_rows",
    "predict_views",
    "UNCERTAINTY_REFERENCE_KEY",
]


# --------------------------------------------------------------------------- mask helpers
def label_to_fg(label: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer label map ``(*spatial)`` -> float one-hot foreground channels ``(K, *spatial)``."""
    lab = torch.as_tensor(np.asarray(label)).long()
    if int(lab.max()) >= num_classes or int(lab.min()) < 0:
        raise ValueError(f"label values {int(lab.min())}..{int(lab.max())} outside 0..{num_classes - 1}")
    return labels_to_fg_onehot(lab[None], num_classes)[0].float()


def hard_fg(fg: torch.Tensor) -> torch.Tensor:
    """Soft foreground probabilities ``(B, K, *S)`` -> hard one-hot foreground (argmax incl. background)."""
    bg = (1.0 - fg.sum(1, keepdim=True)).clamp_min(0)
    full = torch.cat([bg, fg], 1)
    idx = full.argmax(1)
    return F.one_hot(idx, full.shape[1]).movedim(-1, 1)[:, 1:].to(fg.dtype)


def resize_masks(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(B, K, *S)`` masks: nearest for hard {0,1} masks (stay hard), linear for soft ones."""
    size = tuple(int(s) for s in size)
    if tuple(masks.shape[2:]) == size:
        return masks.float()
    masks = masks.float()
    hard = bool(((masks == 0) | (masks == 1)).all())
    if hard:
        return F.interpolate(masks, size=size, mode="nearest")
    return resize_image(masks, size).clamp(0, 1)


# --------------------------------------------------------------------------- uncertainty
#: Checkpoint meta key of the validation reference of the score uncertainty (flip spread).
UNCERTAINTY_REFERENCE_KEY = "score_spread_p90"


def predict_views(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Predicted Dice of the identity view and of a flip along each spatial axis, ``(V, B, K)``.

    The predictor is trained with flips, so each view is an equally valid estimate: their mean is
    a steadier score (TTA) and their spread says how far to trust it. Why the spread rather than
    the decoder's entropy: on the benchmarks' unseen-network masks the spread separated large
    errors on every dataset, the decoder's entropy did not on ACDC (README, quality results).
    """
    flips = [()] + [(d,) for d in range(2, images.ndim)]
    return torch.stack([model(images.flip(f), masks.flip(f)).float() for f in flips])


# --------------------------------------------------------------------------- scorer
#: Context around the mask that a patch-trained predictor scores, per side, as a fraction of the
#: mask's extent (the mask-centred crop's default margin, :mod:`qgseg.quality.roi`).
PATCH_CONTEXT = 0.5


class QualityScorer:
    """A quality predictor plus its preprocessing; ``score(case, mask)`` -> predicted Dice ``(K,)``.

    Args:
        model: the :class:`QualityPredictor` (eval mode is set here).
        meta: checkpoint meta with ``classes``, ``image_size``, ``normalize``, ``spatial_dims``.
        tta: average the prediction over the identity and a flip along each spatial axis. The
            predictor is trained with flips, so each view is an equally valid estimate and the
            mean has less variance (1 + spatial_dims forward passes).
    """

    def __init__(self, model: QualityPredictor, meta: dict[str, Any], device: str | torch.device = "cpu",
                 batch_size: int = 32, tta: bool = False) -> None:
        self.model = model.to(device).eval()
        self.tta = tta
        self.meta = dict(meta)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.classes: list[str] = list(meta["classes"])
        self.image_size: list[int] = [int(s) for s in meta["image_size"]]
        self.spatial_dims: int = int(meta["spatial_dims"])
        self.normalize: str = meta.get("normalize", "auto")

    @property
    def num_fg(self) -> int:
        return len(self.classes) - 1

    @property
    def fg_classes(self) -> list[str]:
        return self.classes[1:]

    # ---------------------------------------------------------------- preprocessing
    @property
    def patches(self) -> bool:
        """Whether the predictor learnt on patches at native resolution (``data.resize: false``)."""
        return not bool(self.meta.get("resize", True))

    def patch_box(self, case: Case, mask: np.ndarray | torch.Tensor) -> tuple[slice, ...] | None:
        """The region of ``case`` a patch-trained predictor scores, ``None`` for the whole image.

        Patch-trained predictors (:attr:`patches`) never saw a whole clinical volume: they score a
        box around the mask's foreground plus :data:`PATCH_CONTEXT` of its extent on each side, at
        least the patch size (native resolution when the structure fits in a patch, else shrunk
        with the patch's aspect), shifted inside the image; an empty mask gets the central patch.
        Only that box is resized, so memory stays bounded by the volume itself.
        """
        if not self.patches or case.spatial_dims != self.spatial_dims:
            return None
        m = torch.as_tensor(np.asarray(mask))
        fg = m > 0 if tuple(m.shape) == tuple(case.spatial_shape) else (m > 0.5).any(0)
        shape = case.spatial_shape
        lo, hi = [], []
        for axis in range(fg.ndim):
            hits = torch.nonzero(fg.any(dim=[a for a in range(fg.ndim) if a != axis]))
            lo.append(int(hits[0]) if len(hits) else shape[axis] // 2)
            hi.append(int(hits[-1]) + 1 if len(hits) else shape[axis] // 2)
        factor = max(1.0, *((h - a) * (1 + 2 * PATCH_CONTEXT) / s for a, h, s in zip(lo, hi, self.image_size)))
        box = []
        for a, h, s, n in zip(lo, hi, self.image_size, shape):
            side = min(n, round(s * factor))
            start = min(max(round((a + h - side) / 2), 0), n - side)
            box.append(slice(start, start + side))
        return tuple(box)

    def default_box(self, case: Case) -> tuple[slice, ...] | None:
        """:meth:`patch_box` of the case's own label (``None`` without one): what a patch-trained predictor
        sees when no box is given, so evaluation on labeled cases (masks derived from the truth) sees
        the structure at the scale it learnt, not the whole volume shrunk."""
        return None if case.label is None else self.patch_box(case, case.label)

    def prepare_image(self, case: Case, box: tuple[slice, ...] | None = None) -> torch.Tensor:
        """Normalised image at the predictor size, ``(N, C, *size)``; N = slices for 3D cases + 2D model.
        With ``box`` (:meth:`patch_box`) only that region, normalised on its own as the predictor's
        training patches (:func:`~qgseg.quality.training.draw_patches`); without, a patch-trained
        predictor gets the box around the case's own label when it has one (:meth:`default_box`).
        A channel count other than the predictor's raises a DataError naming the file (grey images
        for an RGB predictor are converted, with a warning; :func:`match_channels`)."""
        channels = self.meta.get("image_channels")
        if channels is not None:
            case = match_channels(case, int(channels), "the quality predictor")
        box = self.default_box(case) if box is None else box
        if box is not None:
            case = dataclasses.replace(case, image=case.image[(slice(None), *box)], label=None)
        x, _, _ = prepare_network_input(case, self.normalize, self.spatial_dims)
        return resize_image(torch.from_numpy(x), self.image_size)

    def prepare_mask(self, mask: np.ndarray | torch.Tensor, case: Case,
                     box: tuple[slice, ...] | None = None) -> torch.Tensor:
        """A mask for ``case`` -> ``(N, K, *size)``; ``box`` (or its default) as in :meth:`prepare_image`.

        Accepts an integer label map of the case's spatial shape, or foreground channels
        ``(K, *spatial)`` (hard or soft) of that shape. A label map shrinks before it becomes
        one-hot channels (nearest neighbour commutes with one-hot), so a clinical volume never
        becomes K full-size float channels.
        """
        m = torch.as_tensor(np.asarray(mask))
        box = self.default_box(case) if box is None else box
        region = () if box is None else box
        sliced = case.spatial_dims != self.spatial_dims  # 3D case, 2D predictor: the same slices as as_slices
        if tuple(m.shape) == tuple(case.spatial_shape):
            if m.numel() and (int(m.max()) >= len(self.classes) or int(m.min()) < 0):
                raise ValueError(f"label values {int(m.min())}..{int(m.max())} outside 0..{len(self.classes) - 1}")
            lab = m[region]
            lab = lab.movedim(slice_axis(case), 0) if sliced else lab[None]
            return labels_to_fg_onehot(resize_label(lab, self.image_size), len(self.classes)).float()
        if m.ndim == case.spatial_dims + 1 and m.shape[0] == self.num_fg and tuple(m.shape[1:]) == case.spatial_shape:
            fg = m[(slice(None), *region)].float()
        else:
            raise ValueError(f"{case.case_id}: mask shape {tuple(m.shape)} matches neither the image "
                             f"{case.spatial_shape} nor ({self.num_fg}, *spatial)")
        fg = fg.movedim(1 + slice_axis(case), 0) if sliced else fg[None]
        return resize_masks(fg, self.image_size)

    # ---------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(self, images: torch.Tensor, masks: torch.Tensor, return_uncertainty: bool = False):
        """Predicted Dice ``(N, K)`` for prepared tensors, in batches (CPU tensor).

        ``return_uncertainty=True``: ``(Dice, uncertainty)``, both ``(N, K)``; the uncertainty is
        the spread of the prediction over flipped views (:func:`predict_views`, 1 + spatial_dims
        passes). With ``tta`` the Dice is the mean of those same views.
        """
        k = self.num_fg
        if not (self.tta or return_uncertainty):
            out = self._batched(lambda x, m: self.model(x, m), images, masks)
            return out if out is not None else torch.zeros(0, k)

        def views(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            v = predict_views(self.model, x, m)  # (V, B, K)
            dice = v.mean(0) if self.tta else v[0]
            return torch.cat([dice, v.std(0, unbiased=False)], dim=1)  # (B, 2K)

        out = self._batched(views, images, masks)
        out = out if out is not None else torch.zeros(0, 2 * k)
        return (out[:, :k], out[:, k:]) if return_uncertainty else out[:, :k]

    @property
    def uncertainty_reference(self) -> float | None:
        """The 90th percentile of the score uncertainty on the predictor's validation masks (stored
        in the checkpoint by training); a score above it is less certain than 90% of those."""
        ref = self.meta.get(UNCERTAINTY_REFERENCE_KEY)
        return None if ref is None else float(ref)

    def _batched(self, fn, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """``fn(images, masks)`` over batches on the scorer's device, concatenated on the CPU (float)."""
        self.model.eval()
        out = [fn(images[i:i + self.batch_size].to(self.device), masks[i:i + self.batch_size].to(self.device))
               .float().cpu() for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(out) if out else None

    @property
    def has_truth_map(self) -> bool:
        """Whether the predictor decodes an estimate of the true mask (truth-map decoder)."""
        return getattr(self.model, "decoder", None) is not None

    @torch.no_grad()
    def truth_probabilities(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The decoder's probability of each foreground class, ``(N, K, *size)``, for prepared
        tensors, at the prepared size (zero outside the mask-centred crop). Needs a truth-map decoder."""
        if not self.has_truth_map:
            raise ValueError("this quality predictor has no truth-map decoder (trained with truth_map_weight 0)")
        prob = self._batched(  # back from the network's frame (mask-centred crop) to the prepared size
            lambda x, m: self.model.source_view(torch.sigmoid(self.model(x, m, return_truth=True)[1]), m),
            images, masks)
        return prob if prob is not None else torch.zeros(0, self.num_fg, *self.image_size)

    @torch.no_grad()
    def estimated_truth(self, case: Case, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """The predictor's estimate of the TRUE label map for ``case``, at the case's own shape.

        Where it differs from ``mask`` is where the predictor believes the mask is wrong: the
        picture behind a low score. Needs a predictor with a truth-map decoder.
        """
        box = self.patch_box(case, mask)
        prob = self.truth_probabilities(self.prepare_image(case, box), self.prepare_mask(mask, case, box))
        slice_dims = case.spatial_dims != self.spatial_dims
        in_plane = case.spatial_shape if not slice_dims else tuple(
            n for a, n in enumerate(case.spatial_shape) if a != slice_axis(case))
        if box is not None:
            in_plane = tuple(b.stop - b.start for b in box)
        prob = resize_image(prob, list(in_plane))
        best, idx = prob.max(dim=1)  # (N, *in_plane)
        label = torch.where(best > 0.5, idx + 1, torch.zeros_like(idx))
        label = (label[0] if not slice_dims else label.movedim(0, slice_axis(case))).numpy().astype(np.uint8)
        if box is None:
            return label
        full = np.zeros(case.spatial_shape, dtype=np.uint8)  # outside the scored box: no estimate, background
        full[box] = label
        return full

    def score(self, case: Case, mask: np.ndarray | torch.Tensor, return_uncertainty: bool = False):
        """Predicted Dice per foreground class, ``(K,)``; with ``return_uncertainty`` also the
        score's uncertainty ``(K,)`` (spread over flipped views, see :meth:`predict`).

        For a 3D case scored by a 2D predictor the per-slice predictions are averaged, weighted
        by each slice's mask area (plus a small floor so empty slices still count a little):
        an approximation of the volume Dice, which large slices dominate.
        """
        box = self.patch_box(case, mask)
        images = self.prepare_image(case, box)
        masks = self.prepare_mask(mask, case, box)
        out = self.predict(images, masks, return_uncertainty=return_uncertainty)
        parts = out if return_uncertainty else (out,)
        if images.shape[0] == 1:
            values = [p[0].numpy() for p in parts]
        else:
            area = masks.flatten(2).sum(-1)  # (N, K)
            weights = area + 1e-3 * area.sum(0, keepdim=True).clamp_min(1)  # why: keep empty slices in play
            values = [((p * weights).sum(0) / weights.sum(0)).numpy() for p in parts]
        return tuple(values) if return_uncertainty else values[0]


def load_quality_predictor(path: str | Path, device: str | torch.device = "cpu", best: bool = True,
                           tta: bool = False) -> QualityScorer:
    """Rebuild a :class:`QualityScorer` from a checkpoint written by the quality trainer.

    ``path`` may be a ``.ckpt`` file or a run folder (``checkpoints/best.ckpt`` is used).
    Loading uses ``torch.load(weights_only=True)``; the architecture comes from ``meta``.
    """
    model, meta, _ = load_predictor_checkpoint(path, best)
    return QualityScorer(model, meta, device, tta=tta)


def load_predictor_checkpoint(path: str | Path, best: bool = True) -> tuple[QualityPredictor, dict[str, Any], Path]:
    """``(predictor with its weights, meta, checkpoint path)`` from a ``.ckpt`` file or a run folder."""
    from ..engine.checkpoint import load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / ("best.ckpt" if best else "last.ckpt")
    state = load_checkpoint(path, expect="quality")
    meta = state["meta"]
    if "predictor" not in meta:
        raise DataError("not a qgseg quality-predictor checkpoint (no predictor architecture recorded)", path)
    model = QualityPredictor.from_config(meta["predictor"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # edited or mismatched file: the weights do not fit the recorded architecture
        raise DataError(f"its weights do not fit the recorded predictor ({str(exc).splitlines()[0]})", path) from None
    return model, meta, path


# --------------------------------------------------------------------------- folders
def score_folder(scorer: QualityScorer, images_dir: str | Path, masks_dir: str | Path,
                 mask_pattern: str | None = None, overlay_dir: str | Path | None = None,
                 overlay_below: float | None = None,
                 skip_unpaired: bool = False) -> tuple[list[dict[str, Any]], CaseFailures]:
    """Score every (image, mask) pair of two folders; pairs by file name (:func:`pair_files`).

    With ``overlay_dir`` (and a truth-map predictor) an overlay PNG per case, or per case whose
    lowest predicted Dice is below ``overlay_below``, shows the mask next to the predictor's
    estimate of the true outline, so a reviewer sees *where* it thinks the mask is wrong.

    Returns ``(rows, failures)``: one row per scored pair ``{"case_id", "image", "mask", <class>: Dice,
    ..., "min_dice", <class>_uncertainty, ...}`` (and ``unsure`` when the checkpoint holds its
    validation reference: an uncertainty above the 90th percentile of its validation masks), and
    every file not scored with its reason (:class:`~qgseg.per_case.CaseFailures`): unpaired or
    ambiguous files (marked skipped with ``skip_unpaired``), unreadable files, a mask whose size is
    not the image's, a channel count the predictor cannot take. One bad pair never stops the others.
    """
    from ..data.io import list_image_files, read_image, read_mask
    from ..data.pairing import pair_files
    from ..per_case import CaseFailures

    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such folder")
    pairing = pair_files(list_image_files(images_dir), list_image_files(masks_dir), mask_pattern)
    failures = CaseFailures()
    for path, msg in pairing.problems():
        failures.add(path, msg, skipped=skip_unpaired)
    rows: list[dict[str, Any]] = []
    for case_id, img_path, mask_path in pairing.pairs:
        with failures.case(img_path):
            image, info = read_image(img_path)
            case = Case(case_id, image, spacing=info.get("spacing"), affine=info.get("affine"),
                        meta={"dtype": info.get("dtype"), "image_paths": [str(img_path)]})
            mask = read_mask(mask_path, num_classes=len(scorer.classes))
            if tuple(mask.shape) != case.spatial_shape:
                raise DataError(f"mask shape {tuple(mask.shape)} != image shape {tuple(case.spatial_shape)} "
                                f"({img_path.name})", mask_path)
            row: dict[str, Any] = {"case_id": case_id, "image": str(img_path), "mask": str(mask_path)}
            dice, unc = scorer.score(case, mask, return_uncertainty=True)
            row.update({f"{name}_uncertainty": float(u) for name, u in zip(scorer.fg_classes, unc)})
            if scorer.uncertainty_reference is not None:
                row["unsure"] = bool(np.max(unc) > scorer.uncertainty_reference)
            row.update({name: float(v) for name, v in zip(scorer.fg_classes, dice)})
            row["min_dice"] = float(np.min(dice))
            if overlay_dir is not None and scorer.has_truth_map and (overlay_below is None
                                                                      or row["min_dice"] < overlay_below):
                row["overlay"] = str(save_qc_overlay(scorer, case, mask, Path(overlay_dir) / f"{case_id}.png",
                                                     row["min_dice"]))
            rows.append(row)
    return rows, failures


def save_qc_overlay(scorer: QualityScorer, case: Case, mask: np.ndarray, path: Path, predicted: float) -> Path:
    """Overlay of a scored mask (magenta) and the predictor's estimate of the true outline (green)."""
    from ..viz.plots import save_overlay

    return save_overlay(case.image, scorer.estimated_truth(case, mask), mask, path,
                        title=f"{case.case_id}  predicted Dice {predicted:.3f}",
                        legend="predictor's estimate of the truth: green, scored mask: magenta")


def flagged_rows(rows: list[dict[str, Any]], below: float) -> list[dict[str, Any]]:
    """The scored rows whose lowest predicted Dice (any class) is below ``below``, worst first."""
    return sorted((r for r in rows if r["min_dice"] < below), key=lambda r: r["min_dice"])


def write_qc_report(rows: list[dict[str, Any]], path: str | Path, classes: Sequence[str],
                    flag_below: float | None = None, source: str = "") -> Path:
    """Markdown QC report of scored masks (no ground truth): per-class summary, a histogram of the
    predicted Dice (``<stem>_histogram.png`` beside it) and, with ``flag_below``, the cases to
    review worst first with links to their overlays. Returns the report's path."""
    from ..viz.quality_plots import predicted_dice_histogram

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pred = np.array([[r[c] for c in classes] for r in rows], dtype=np.float64).reshape(len(rows), len(classes))
    hist = predicted_dice_histogram(pred, classes, path.with_name(f"{path.stem}_histogram.png"), flag_below)
    lines = ["# Quality control report", "",
             f"{len(rows)} mask(s) scored{' - ' + source if source else ''}. Predicted Dice is the quality "
             "predictor's estimate without ground truth: trust it on images like its training data "
             "(see its `qgseg quality eval` report).", "",
             "| class | mean | median | 10th percentile | min |" + (f" below {flag_below:g} |" if flag_below is not None
                                                                    else ""),
             "|---|---|---|---|---|" + ("---|" if flag_below is not None else "")]
    for j, name in enumerate(classes):
        col = pred[:, j]
        row = (f"| {name} | {col.mean():.3f} | {np.median(col):.3f} | {np.percentile(col, 10):.3f} | "
               f"{col.min():.3f} |")
        lines.append(row + (f" {int((col < flag_below).sum())} |" if flag_below is not None else ""))
    lines += ["", f"![predicted Dice]({hist.name})", ""]
    has_unc = bool(rows) and f"{classes[0]}_uncertainty" in rows[0]

    def table(selected: list[dict[str, Any]]) -> list[str]:
        head = "| case | " + " | ".join(classes) + (" | uncertainty |" if has_unc else " |") + " overlay |"
        out = [head, "|---|" + "---|" * (len(classes) + 1 + has_unc)]
        for r in selected:
            link = ""
            if "overlay" in r:
                target = Path(r["overlay"])
                try:  # relative links keep the report readable when the folder is moved
                    target = Path(os.path.relpath(target, path.parent))
                except ValueError:  # another drive (Windows)
                    pass
                link = f"[png]({target.as_posix()})"
            unc = f" {max(r[f'{c}_uncertainty'] for c in classes):.3f} |" if has_unc else ""
            out.append(f"| {r['case_id']} | " + " | ".join(f"{r[c]:.3f}" for c in classes) + f" |{unc} {link} |")
        return [*out, ""]

    if flag_below is not None:
        flagged = flagged_rows(rows, flag_below)
        lines += [f"## To review: {len(flagged)} case(s) with a predicted Dice below {flag_below:g} (worst first)", ""]
        lines += table(flagged) if flagged else []
    if rows and "unsure" in rows[0]:
        unsure = sorted((r for r in rows if r["unsure"]),
                        key=lambda r: -max(r[f"{c}_uncertainty"] for c in classes))
        lines += [f"## The predictor is unsure of {len(unsure)} score(s)", "",
                  "Its prediction varies more across flipped views than for 90% of its validation masks. Such "
                  "scores tend to be less reliable (how much for this predictor: the uncertainty section of its "
                  "`qgseg quality eval` report); review them whatever their value (most uncertain first).", ""]
        lines += table(unsure) if unsure else []
    path.write_text("\n".join(lines) + "\n")
    return path


def write_scores_csv(rows: list[dict[str, Any]], path: str | Path, classes: Sequence[str]) -> Path:
    """CSV with ``case_id`` and one predicted-Dice column per foreground class (+ ``min_dice``), then
    ``<class>_uncertainty`` and ``unsure`` when the rows have them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    numeric = [*classes, "min_dice"]
    if rows and f"{classes[0]}_uncertainty" in rows[0]:
        numeric += [f"{c}_uncertainty" for c in classes]
    flags = ["unsure"] if rows and "unsure" in rows[0] else []
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", *numeric, *flags])
        for r in rows:
            w.writerow([r["case_id"]] + [f"{r[c]:.4f}" for c in numeric] + [int(r[c]) for c in flags])
    return path
