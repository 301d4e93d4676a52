"""Evaluating a quality predictor on held-out cases.

Four questions, one report (``quality_eval.json`` + ``quality_eval.md`` + plots):

a. **synthetic**: fixed-seed corrupted masks of held-out cases (same generator as training);
b. **real**: hard predictions of segmentation networks the predictor never saw (another seed
   and/or architecture) - the masks it will actually be asked to score;
c. **shortcuts**: does the prediction depend on the image at all? Black out the image, or give
   each mask another case's image, and measure how much the prediction moves; and a
   **mask-only baseline** (kNN regression on mask shape statistics fit on training masks): if
   it is as good as the predictor, the predictor has learned mask priors, not image evidence;
d. **ph2_fixed**: the published fixed PH2 mask set (``PH2/quality-test-masks.npz``), when present;
e. **truth_map** (predictors with a truth-map decoder): given each case's TRUE mask, how well
   does the predictor's own estimate of the truth match it? Its scores follow that estimate, so
   a low Dice here (per group: a sequence, a patient) says the predictor does not recognise the
   structure in those images, and its scores there cannot be trusted, whatever the mask.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..data.case import Case
from ..evaluation.inference import Segmenter
from ..evaluation.metrics import foreground_dice
from .corruptions import dice_per_class
from .metrics import (
    format_quality_table,
    quality_report,
    regression_metrics,
    uncertainty_metrics,
)
from .sampler import SamplerConfig, VariableQualitySampler
from .scoring import QualityScorer

__all__ = ["evaluate_quality", "truth_map_recognition", "largest_errors", "structure_size_keys", "mask_features", "MaskOnlyBaseline",
           "evaluate_ph2_fixed", "find_ph2_fixed", "real_network_pairs"]

PH2_FIXED_NAME = "quality-test-masks.npz"


# --------------------------------------------------------------------------- data helpers
def _tensors(scorer: QualityScorer, cases: Sequence[Case]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prepared images and truth masks at the predictor size, via the scorer's own preprocessing,
    and the case each row comes from (volumes scored by a 2D predictor give one row per slice)."""
    images, truths, owner = [], [], []
    for n, case in enumerate(cases):
        if case.label is None:
            raise ValueError(f"{case.case_id}: evaluation needs labeled cases")
        images.append(scorer.prepare_image(case))
        truths.append(scorer.prepare_mask(case.label, case))
        owner += [n] * images[-1].shape[0]
    return torch.cat(images), torch.cat(truths), torch.tensor(owner)


def _by_key(pred: np.ndarray, true: np.ndarray, keys: Sequence[str] | np.ndarray,
            order: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """:func:`regression_metrics` of the entries sharing each key (category, sequence, patient ...).

    ``keys`` has one entry per row of ``pred``, or per entry (same shape as ``pred``); ``order``
    fixes the order of the keys (default: sorted), and keys absent from the data are skipped.
    """
    keys = np.asarray(keys)
    present = set(np.unique(keys).tolist())
    names = [k for k in order if k in present] if order is not None else sorted(present)
    return {k: regression_metrics(pred[keys == k], true[keys == k]) for k in names}


#: Bins of the true structure size (fraction of the image) for the per-size error table.
SIZE_BINS: tuple[tuple[str, float], ...] = (("absent", 0.0), ("<0.5%", 0.005), ("0.5-2%", 0.02), ("2-10%", 0.10),
                                             (">=10%", math.inf))


def structure_size_keys(truth: torch.Tensor) -> np.ndarray:
    """Size bin of each foreground class of each truth mask ``(N, K, *spatial)`` -> ``(N, K)`` labels.

    Why: a tiny or absent structure is much harder to judge than a large one, and the mean error
    hides how many of them a dataset has (ACDC apex slices, small polyps).
    """
    frac = truth.float().flatten(2).mean(-1).cpu().numpy()
    keys = np.full(frac.shape, SIZE_BINS[-1][0], dtype=object)
    for name, upper in reversed(SIZE_BINS[:-1]):
        keys[frac <= upper if upper == 0.0 else frac < upper] = name
    return keys.astype(str)


def largest_errors(synthetic: dict[str, Any]) -> list[str]:
    """One line per breakdown of a synthetic report section (category, group, structure size):
    the slice with the largest MAE, to tell a user where the predictor is least reliable."""
    lines = []
    for key, title in (("by_category", "category"), ("by_group", "group"), ("by_structure_size", "structure size")):
        slices = {k: v for k, v in synthetic.get(key, {}).items() if v["n"] > 0 and math.isfinite(v["mae"])}
        if len(slices) > 1:
            worst = max(slices, key=lambda k: slices[k]["mae"])
            lines.append(f"{title} {worst}: MAE {slices[worst]['mae']:.3f} (n={slices[worst]['n']}; "
                         f"all {synthetic['all']['mae']:.3f})")
    return lines


def truth_map_recognition(scorer: QualityScorer, images: torch.Tensor, truth: torch.Tensor,
                          groups: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Dice of the predictor's estimated truth (decoder, thresholded at 0.5) against the truth,
    with the TRUE mask as the scored mask: ``{"dice", "per_class", "by_group"?, "n"}``.

    ``images``/``truth`` are prepared tensors ``(N, C|K, *size)``; ``groups`` one label per row.
    Both-empty counts as Dice 1 (the training target's convention).
    """
    est = (scorer.truth_probabilities(images, truth) > 0.5).float()
    dice = dice_per_class(est, truth.float()).numpy()  # (N, K)
    out: dict[str, Any] = {"dice": float(dice.mean()) if dice.size else float("nan"), "n": int(dice.shape[0]),
                           "per_class": {c: float(dice[:, j].mean()) for j, c in enumerate(scorer.fg_classes)}}
    if groups is not None and all(g is not None for g in groups) and len(set(groups)) > 1:
        keys = np.asarray(groups)
        out["by_group"] = {g: float(dice[keys == g].mean()) for g in sorted(set(groups))}
    return out


def _eval_sampler(scorer: QualityScorer) -> VariableQualitySampler:
    """The default category mix without weak predictions (evaluation must not depend on training runs)."""
    return VariableQualitySampler(SamplerConfig(weak=0.0), scorer.spatial_dims, scorer.num_fg)


# --------------------------------------------------------------------------- mask-only baseline
def mask_features(masks: torch.Tensor) -> np.ndarray:
    """Shape statistics per sample and class, ``(N, K, F)``: area fraction, boundary/area ratio,
    number of components, largest-component fraction, bounding-box fill, softness."""
    m = masks.float().cpu().numpy()
    n, k = m.shape[:2]
    feats = np.zeros((n, k, 6), dtype=np.float64)
    for i in range(n):
        for c in range(k):
            soft = m[i, c]
            hard = soft > 0.5
            area = hard.sum()
            feats[i, c, 0] = soft.mean()
            feats[i, c, 5] = float(np.mean(np.minimum(soft, 1 - soft)) * 2)
            if area == 0:
                continue
            boundary = hard & ~ndimage.binary_erosion(hard)
            feats[i, c, 1] = boundary.sum() / area
            lab, ncomp = ndimage.label(hard)
            feats[i, c, 2] = min(ncomp, 20)
            sizes = np.bincount(lab.ravel())[1:]
            feats[i, c, 3] = sizes.max() / area
            sl = ndimage.find_objects(hard.astype(np.int32))[0]
            box = np.prod([s.stop - s.start for s in sl])
            feats[i, c, 4] = area / box
    return feats


class MaskOnlyBaseline:
    """kNN regressor (per class) from :func:`mask_features` to Dice; sees the mask, never the image."""

    def __init__(self, k: int = 15) -> None:
        self.k = k

    def fit(self, masks: torch.Tensor, dice: torch.Tensor) -> "MaskOnlyBaseline":
        f = mask_features(masks)
        self.mean = f.mean(0, keepdims=True)
        self.std = f.std(0, keepdims=True) + 1e-6
        self.x = (f - self.mean) / self.std  # (N, K, F)
        self.y = dice.float().cpu().numpy()  # (N, K)
        return self

    def predict(self, masks: torch.Tensor) -> np.ndarray:
        x = (mask_features(masks) - self.mean) / self.std
        out = np.empty(x.shape[:2])
        k = min(self.k, self.x.shape[0])
        for c in range(x.shape[1]):
            d = ((x[:, c, None, :] - self.x[None, :, c, :]) ** 2).sum(-1)  # (M, N)
            nn_idx = np.argpartition(d, k - 1, axis=1)[:, :k]
            out[:, c] = self.y[nn_idx, c].mean(1)
        return out


# --------------------------------------------------------------------------- real networks
def real_network_pairs(scorer: QualityScorer, cases: Sequence[Case], snapshots: Sequence[str | Path],
                       device: Any = "cpu", progress: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Hard predictions of ``snapshots`` on ``cases``: (predicted Dice, true Dice at the original
    resolution, source names, score uncertainty), arrays ``(N * S, K)``."""
    from tqdm.auto import tqdm

    segs = [(Path(p).stem, Segmenter.from_checkpoint(p, device=device)) for p in snapshots]
    preds, trues, uncs, names = [], [], [], []
    for case in tqdm(cases, desc="quality eval (real nets)", disable=not progress, dynamic_ncols=True):
        for name, seg in segs:
            label = seg.predict(case)
            trues.append(foreground_dice(label, case.label, len(scorer.classes)))
            dice, unc = scorer.score(case, label, return_uncertainty=True)
            preds.append(dice)
            uncs.append(unc)
            names.append(name)
    k = scorer.num_fg
    return (np.asarray(preds).reshape(-1, k), np.asarray(trues).reshape(-1, k), names,
            np.asarray(uncs).reshape(-1, k))


# --------------------------------------------------------------------------- PH2 fixed set
def find_ph2_fixed(root: str | Path | None) -> Path | None:
    """``<root>/quality-test-masks.npz`` when ``root`` is a PH2 folder that has it."""
    if root is None:
        return None
    path = Path(root) / PH2_FIXED_NAME
    return path if path.is_file() else None


def evaluate_ph2_fixed(scorer: QualityScorer, npz_path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Score the 200 fixed PH2 masks: images ``PH2/images/<id>.jpg`` resized to 224x224 (Pillow's
    default resampling, aspect ratio not kept, as the masks were made). Returns (pred, true, corruption)."""
    from PIL import Image

    npz_path = Path(npz_path)
    with np.load(npz_path, allow_pickle=False) as z:
        ids = [str(i) for i in z["image_id"]]
        corruption = [str(c) for c in z["corruption"]]
        true = z["true_dice"].astype(np.float64)
        masks = np.unpackbits(z["mask_bits"], axis=-1)[..., :224].astype(np.int64)
    images_dir = npz_path.parent / "images"
    cache: dict[str, torch.Tensor] = {}
    preds = []
    for i, image_id in enumerate(ids):
        if image_id not in cache:
            matches = sorted(images_dir.glob(f"{image_id}.*"))
            if not matches:
                raise FileNotFoundError(f"{images_dir}/{image_id}.*: image of the fixed PH2 mask set not found")
            with Image.open(matches[0]) as im:
                arr = np.asarray(im.convert("RGB").resize((224, 224)))
            cache[image_id] = torch.as_tensor(np.moveaxis(arr, -1, 0).astype(np.float32))
        case = Case(image_id, cache[image_id].numpy(), meta={"dtype": "uint8"})
        image = scorer.prepare_image(case)
        mask = scorer.prepare_mask(masks[i], case)
        preds.append(scorer.predict(image, mask)[0, 0].item())
    return np.asarray(preds), true, corruption


# --------------------------------------------------------------------------- the report
def _section(pred: np.ndarray, true: np.ndarray, classes: list[str], out_dir: Path, name: str,
             categories: Sequence[str] | None, tables: dict[str, str]) -> dict[str, Any]:
    from ..viz.quality_plots import reliability_plot, scatter_pred_vs_true

    rep = quality_report(pred, true, per_class=classes if pred.ndim == 2 else None)
    tables[name] = format_quality_table(rep)
    plots = out_dir / "plots"
    rep["plots"] = {
        "scatter": str(scatter_pred_vs_true(pred, true, plots / f"{name}_scatter.png", title=name,
                                            categories=categories)),
        "reliability": str(reliability_plot(pred, true, plots / f"{name}_reliability.png")),
    }
    return rep


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate_quality(scorer: QualityScorer, cases: Sequence[Case], out_dir: str | Path, seed: int = 1234,
                     k: int = 5, real_snapshots: Sequence[str | Path] | None = None,
                     train_cases: Sequence[Case] | None = None, ph2_fixed: str | Path | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Evaluate ``scorer`` on labeled held-out ``cases``; writes ``quality_eval.{json,md}`` and plots.

    Args:
        seed, k: fixed seed and masks per image of the synthetic set.
        real_snapshots: segmentation checkpoints the predictor never saw (part b); skipped if empty.
        train_cases: training cases for the mask-only baseline (skipped when ``None``).
        ph2_fixed: path of ``PH2/quality-test-masks.npz`` (part d); skipped when ``None``.

    Returns:
        ``{"synthetic", "real"?, "shortcuts", "mask_only"?, "ph2_fixed"?, "tables", "files"}``;
        each metrics section is a :func:`quality_report` (MAE, RMSE, Pearson, Spearman, MAE per
        true-Dice bin, AUROC/AUPRC for Dice < 0.5/0.7/0.8).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = scorer.fg_classes
    tables: dict[str, str] = {}
    report: dict[str, Any] = {"cases": len(cases), "seed": seed, "masks_per_image": k, "classes": classes}

    # (a) synthetic fixed-seed masks
    images, truth, owner = _tensors(scorer, cases)
    sampler = _eval_sampler(scorer)
    fixed = sampler.fixed_masks(truth, seed, k)
    img_rows = images[fixed.index]
    pred, unc = scorer.predict(img_rows, fixed.masks, return_uncertainty=True)
    true = fixed.dice.cpu()
    report["synthetic"] = _section(pred.numpy(), true.numpy(), classes, out_dir, "synthetic", fixed.category, tables)
    report["synthetic"]["uncertainty"] = uncertainty_metrics(pred.numpy(), true.numpy(), unc.numpy(),
                                                             scorer.uncertainty_reference)
    report["synthetic"]["by_category"] = _by_key(pred.numpy(), true.numpy(), fixed.category)
    # why: held-out sequences/patients differ in difficulty, and one bad group can dominate the mean
    groups = [cases[int(i)].group for i in owner[fixed.index.cpu()]]
    if all(g is not None for g in groups) and len(set(groups)) > 1:
        report["synthetic"]["by_group"] = _by_key(pred.numpy(), true.numpy(), groups)
    size_keys = structure_size_keys(truth)[fixed.index.cpu().numpy()]  # per image, then one row per mask
    report["synthetic"]["by_structure_size"] = _by_key(pred.numpy(), true.numpy(), size_keys,
                                                       order=[name for name, _ in SIZE_BINS])

    # (e) does the predictor recognise the structure? (its scores follow its estimate of the truth)
    if scorer.has_truth_map:
        report["truth_map"] = truth_map_recognition(scorer, images, truth, [cases[int(i)].group for i in owner])

    # (c) shortcut tests: the prediction should move when the image stops matching the mask
    black = scorer.predict(torch.zeros_like(img_rows), fixed.masks)
    n_img = images.shape[0]
    shuffled_rows = images[(fixed.index + 1) % n_img] if n_img > 1 else img_rows
    shuffled = scorer.predict(shuffled_rows, fixed.masks)
    report["shortcuts"] = {
        "black_image": {"mean_abs_change": float((black - pred).abs().mean()),
                        "mae_vs_true": regression_metrics(black.numpy(), true.numpy())["mae"]},
        "shuffled_images": {"mean_abs_change": float((shuffled - pred).abs().mean()),
                            "mae_vs_true": regression_metrics(shuffled.numpy(), true.numpy())["mae"],
                            "valid": n_img > 1},
    }
    if train_cases:
        _, t_truth, _ = _tensors(scorer, train_cases)
        t_fixed = sampler.fixed_masks(t_truth, seed + 1, max(k, 4))
        baseline = MaskOnlyBaseline().fit(t_fixed.masks, t_fixed.dice)
        b_pred = baseline.predict(fixed.masks)
        rm = regression_metrics(b_pred, true.numpy())
        report["mask_only"] = {**rm, "method": "kNN on mask shape statistics", "train_masks": len(t_fixed)}
        tables["mask_only"] = format_quality_table(quality_report(b_pred, true.numpy(), classes))

    # (b) real networks never seen in training
    if real_snapshots:
        r_pred, r_true, names, r_unc = real_network_pairs(scorer, cases, real_snapshots, scorer.device, progress)
        report["real"] = _section(r_pred, r_true, classes, out_dir, "real", names, tables)
        report["real"]["uncertainty"] = uncertainty_metrics(r_pred, r_true, r_unc, scorer.uncertainty_reference)
        report["real"]["snapshots"] = [str(p) for p in real_snapshots]

    # (d) the published fixed PH2 mask set
    if ph2_fixed is not None:
        p_pred, p_true, corr = evaluate_ph2_fixed(scorer, ph2_fixed)
        report["ph2_fixed"] = _section(p_pred, p_true, classes, out_dir, "ph2_fixed", corr, tables)

    report["tables"] = tables
    json_path = out_dir / "quality_eval.json"
    md_path = out_dir / "quality_eval.md"
    report["files"] = {"json": str(json_path), "markdown": str(md_path)}
    with open(json_path, "w") as fh:
        json.dump(_json_safe({k: v for k, v in report.items() if k != "tables"}), fh, indent=2)
    md_path.write_text(_markdown(report))
    return report


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Quality predictor evaluation", "",
             f"{report['cases']} held-out cases, {report['masks_per_image']} synthetic masks per image "
             f"(seed {report['seed']}); classes {report['classes']}.", ""]
    titles = {"synthetic": "Synthetic corrupted masks (fixed seed)",
              "real": "Real networks never seen in training (hard predictions)",
              "ph2_fixed": "PH2 fixed quality test set (quality-test-masks.npz)",
              "mask_only": "Mask-only baseline (kNN on mask statistics, same synthetic masks)"}
    for key, title in titles.items():
        if key in report["tables"]:
            lines += [f"## {title}", "", report["tables"][key], ""]
    sc = report["shortcuts"]
    lines += ["## Shortcut tests (synthetic masks)", "",
              "| test | mean abs change of prediction | MAE vs true Dice |", "|---|---|---|",
              f"| image blacked out | {sc['black_image']['mean_abs_change']:.3f} | {sc['black_image']['mae_vs_true']:.3f} |",
              f"| images shuffled across cases | {sc['shuffled_images']['mean_abs_change']:.3f} | "
              f"{sc['shuffled_images']['mae_vs_true']:.3f} |", "",
              "A predictor that uses the image should change its prediction (and get worse) in both tests.", ""]
    if "truth_map" in report:
        tm = report["truth_map"]
        lines += ["## Does the predictor recognise the structure? (truth-map decoder, true mask given)", "",
                  f"Dice of its estimated truth against the truth: **{tm['dice']:.3f}** over {tm['n']} images"
                  + (" (" + ", ".join(f"{c} {v:.3f}" for c, v in tm["per_class"].items()) + ")"
                     if len(tm["per_class"]) > 1 else "") + ". Its scores follow this estimate: where it "
                  "is low the predictor does not know where the structure is.", ""]
        if "by_group" in tm:
            lines += ["| group | estimated-truth Dice |", "|---|---|"]
            lines += [f"| {g} | {v:.3f} |" for g, v in tm["by_group"].items()]
            lines.append("")
    unc_rows = [(name, report[name]["uncertainty"]) for name in ("synthetic", "real")
                if "uncertainty" in report.get(name, {})]
    if unc_rows:
        covs = list(unc_rows[0][1]["mae_at_coverage"])
        lines += ["## Does the score's uncertainty point at its errors?", "",
                  "Uncertainty: the spread of the predicted Dice over flipped views. MAE of the most certain "
                  "fraction of the scores (coverage), and how well the uncertainty detects errors above "
                  f"{unc_rows[0][1]['error_threshold']:g}.", "",
                  "| masks | Spearman(uncertainty, abs error) | AUROC | " + " | ".join(f"MAE @ {c}" for c in covs)
                  + " | unsure (> val p90) | MAE sure / unsure |",
                  "|---|---|---|" + "---|" * len(covs) + "---|---|"]
        for name, u in unc_rows:
            ref = (f"{u['unsure_fraction']:.2f} | {u['mae_sure']:.3f} / {u['mae_unsure']:.3f}"
                   if "unsure_fraction" in u else "n/a | n/a")
            lines.append(f"| {name} | {u['spearman_abs_error']:.3f} | {u['auroc_error']:.3f} | "
                         + " | ".join(f"{u['mae_at_coverage'][c]:.3f}" for c in covs) + f" | {ref} |")
        lines.append("")
    if "by_category" in report["synthetic"]:
        lines += ["## Synthetic MAE by sampler category", "", "| category | n | MAE | Spearman |", "|---|---|---|---|"]
        for c, m in report["synthetic"]["by_category"].items():
            lines.append(f"| {c} | {m['n']} | {m['mae']:.3f} | {m['spearman']:.3f} |")
        lines.append("")
    if "by_structure_size" in report["synthetic"]:
        lines += ["## Synthetic MAE by true structure size (fraction of the image, per class)", "",
                  "| size | n | MAE | Spearman |", "|---|---|---|---|"]
        for g, m in report["synthetic"]["by_structure_size"].items():
            lines.append(f"| {g} | {m['n']} | {m['mae']:.3f} | {m['spearman']:.3f} |")
        lines.append("")
    if "by_group" in report["synthetic"]:
        lines += ["## Synthetic MAE by group (sequence / patient)", "", "| group | n | MAE | Spearman |",
                  "|---|---|---|---|"]
        for g, m in report["synthetic"]["by_group"].items():
            lines.append(f"| {g} | {m['n']} | {m['mae']:.3f} | {m['spearman']:.3f} |")
        lines.append("")
    return "\n".join(lines)
