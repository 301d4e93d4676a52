"""Weak-network snapshots: realistic imperfect masks for training the quality predictor.

Synthetic corruptions do not look exactly like the mistakes a real network makes early in
training (blurry, under-confident, partially wrong). So a segmenter is trained *briefly* on
the labeled data with the shared engine (:class:`SegmentationTrainer`, no second training loop)
and its weights are saved after a few epochs (``cfg.quality.weak_epochs``). Their soft
foreground predictions on the training cases are cached at the predictor's input size, and the
sampler's "weak" category draws from them.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import RunConfig
from ..data.case import Case
from ..data.preprocess import resize_image, slice_axis
from ..data.run_data import RunData
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..engine.segmentation import SegmentationTrainer
from ..evaluation.inference import Segmenter

__all__ = ["WeakSnapshotTrainer", "weak_run_config", "train_weak_snapshots", "predict_weak", "cross_fitted_weak",
           "load_or_predict_weak", "snapshot_paths", "snapshot_epochs", "as_unit"]


class WeakSnapshotTrainer(SegmentationTrainer):
    """:class:`SegmentationTrainer` that saves the weights at given iterations (epoch ends).

    ``training_step(it)`` runs before the optimiser step of iteration ``it``, so the weights it
    sees are those after ``it - 1`` steps: a snapshot for "after iteration n" is taken at the
    start of iteration ``n + 1``; the final one after :meth:`fit` returns.
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, snapshots: dict[int, int], out_dir: str | Path,
                 data: RunData | None = None) -> None:
        super().__init__(cfg, run_dir, data=data)
        self.snapshots = dict(snapshots)  # iteration -> epoch
        self.out_dir = Path(out_dir)
        self.saved: dict[int, Path] = {}

    def save_snapshot(self, iteration: int) -> None:
        epoch = self.snapshots[iteration]
        if iteration in self.saved or not self.is_main:
            return
        state = {"model": {k: v.detach().cpu().clone() for k, v in self._raw_model().state_dict().items()},
                 "meta": {"spec": self.spec.to_dict(), "task": "segmentation", "weak_epoch": epoch},
                 "iteration": iteration, "epoch": epoch}
        self.saved[iteration] = save_checkpoint(state, self.out_dir / f"epoch_{epoch:03d}.ckpt")

    def training_step(self, iteration: int) -> dict[str, torch.Tensor]:
        if iteration - 1 in self.snapshots:
            self.save_snapshot(iteration - 1)
        return super().training_step(iteration)

    def fit(self, resume: bool = False, stop_after: int | None = None):  # type: ignore[override]
        result = super().fit(resume=resume, stop_after=stop_after)
        if result.iterations_done in self.snapshots:
            self.save_snapshot(result.iterations_done)
        return result


def weak_run_config(cfg: RunConfig, n_labeled: int, seed: int | None = None, model_name: str | None = None,
                    epochs: Sequence[int] | None = None) -> tuple[RunConfig, dict[int, int]]:
    """Config of the short segmenter run and its snapshot points ``{iteration: epoch}``
    (``epochs`` overrides ``quality.weak_epochs``)."""
    q = cfg.quality
    wcfg = copy.deepcopy(cfg)
    wcfg.model.name = model_name or q.weak_model or cfg.model.name
    per_epoch = q.weak_iterations_per_epoch or max(1, math.ceil(n_labeled / cfg.train.batch_size))
    epochs = sorted({int(e) for e in (q.weak_epochs if epochs is None else epochs) if int(e) >= 1})
    if not epochs:
        raise ValueError("quality.weak_epochs must contain at least one epoch >= 1")
    snapshots = {e * per_epoch: e for e in epochs}
    wcfg.train.iterations = max(snapshots)
    # why: validation is useless here (we want the bad early weights), so run it only once at the end
    wcfg.train.val_every = wcfg.train.iterations
    wcfg.train.checkpoint_every = wcfg.train.iterations
    wcfg.train.early_stop_patience = None
    wcfg.train.ema = None
    # why: the weak networks are plain supervised snapshots, whatever guided run the config describes
    # (`qgseg run --variant mt-qw` trains its predictor first, before any predictor exists)
    wcfg.ssl.method = "supervised"
    wcfg.guidance.qw = wcfg.guidance.qar = False
    if seed is not None:
        wcfg.train.seed = seed
    wcfg.name = f"{cfg.name}-weak"
    return wcfg, snapshots


def snapshot_paths(out_dir: str | Path) -> list[Path]:
    """Snapshot files in ``out_dir`` sorted by epoch."""
    return sorted(Path(out_dir).glob("epoch_*.ckpt"))


def train_weak_snapshots(cfg: RunConfig, data: RunData, out_dir: str | Path, device: str | None = None,
                         seed: int | None = None, model_name: str | None = None,
                         epochs: Sequence[int] | None = None) -> list[Path]:
    """Train the segmenter briefly on ``data.labeled`` and save snapshots after ``cfg.quality.weak_epochs``.

    Existing snapshots for every requested epoch are reused (resume / reruns). ``device`` ("cpu",
    "cuda", ...) overrides ``cfg.runtime.accelerator``; ``seed`` and ``model_name`` give another
    set of snapshots (e.g. unseen networks for evaluation); ``epochs`` other snapshot epochs.
    """
    out_dir = Path(out_dir)
    wcfg, snapshots = weak_run_config(cfg, len(data.labeled), seed, model_name, epochs)
    expected = [out_dir / f"epoch_{e:03d}.ckpt" for e in sorted(snapshots.values())]
    if all(p.is_file() for p in expected):
        return expected
    if device is not None:
        wcfg.runtime.accelerator = "cuda" if str(device).startswith("cuda") else str(device)
    trainer = WeakSnapshotTrainer(wcfg, out_dir / "run", snapshots, out_dir, data=data)
    trainer.fit()
    missing = [p for p in expected if not p.is_file()]
    if missing:
        raise RuntimeError(f"weak snapshots missing after training: {missing}")
    return expected


@torch.no_grad()
def predict_weak(snapshots: Sequence[str | Path], cases: Sequence[Case], image_size: Sequence[int],
                 spatial_dims: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Soft foreground predictions of every snapshot on every case at the predictor input size.

    Returns a uint8 tensor ``(N, S, K, *image_size)`` (probabilities x 255, to keep the cache
    small; divide by 255 to use). N counts samples as the predictor sees them: a 3D case given
    to a 2D predictor contributes one sample per slice, in the order of :class:`TensorBank`.
    """
    segmenters = [Segmenter.from_checkpoint(p, device=device) for p in snapshots]
    per_case: list[torch.Tensor] = []
    for case in cases:
        preds = []
        for seg in segmenters:
            fg = torch.from_numpy(seg.predict_proba(case))[1:].float()  # (K, *spatial)
            if case.spatial_dims == spatial_dims:
                fg = fg[None]
            else:  # 3D case, 2D predictor: the same slices as TensorBank / Segmenter
                fg = fg.movedim(1 + slice_axis(case), 0)
            preds.append(resize_image(fg, image_size).clamp(0, 1))  # (n, K, *size)
        per_case.append(torch.stack(preds, 1))  # (n, S, K, *size)
    out = torch.cat(per_case) if per_case else torch.zeros(0)
    return (out * 255).round().to(torch.uint8)


def load_or_predict_weak(cache: str | Path, snapshots: Sequence[str | Path], cases: Sequence[Case],
                         image_size: Sequence[int], spatial_dims: int, device: Any = "cpu") -> torch.Tensor:
    """:func:`predict_weak` cached in ``cache`` (.pt); the cache is keyed by snapshot files and case ids."""
    cache = Path(cache)
    key = {"snapshots": [str(Path(p).resolve()) for p in snapshots], "ids": [c.case_id for c in cases],
           "size": [int(s) for s in image_size]}
    if cache.is_file():
        state = torch.load(cache, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            return state["preds"]
    preds = predict_weak(snapshots, cases, image_size, spatial_dims, device)
    save_checkpoint({"key": key, "preds": preds}, cache)
    return preds


def snapshot_epochs(paths: Sequence[str | Path]) -> list[int]:
    """Epoch recorded in each snapshot file."""
    return [int(load_checkpoint(p)["epoch"]) for p in paths]


def as_unit(preds: torch.Tensor) -> torch.Tensor:
    """uint8 cache -> float probabilities in [0, 1]."""
    return preds.float() / 255.0 if preds.dtype == torch.uint8 else preds.float()



def cross_fitted_weak(cfg: RunConfig, data: RunData, cases: Sequence[Case], out_dir: str | Path,
                      image_size: Sequence[int], spatial_dims: int, folds: int, device: Any = "cpu"
                      ) -> tuple[torch.Tensor, list[Path]]:
    """Weak predictions on the labeled cases from snapshots that never trained on them.

    Snapshots trained on the labeled images predict those same images far better than new
    ones, so the predictor would learn from unrealistically good "weak" masks. Here the
    labeled groups are split into ``folds``; each fold's images are predicted by snapshots
    trained on the other folds. Returns the predictions in the order of ``cases`` (as
    :func:`predict_weak`) and the first fold's snapshots (for validation images).
    """
    from dataclasses import replace

    from ..data.splits import split_by_groups

    out_dir = Path(out_dir)
    ids = [c.case_id for c in cases]
    groups = {i: data.dataset.groups.get(i) for i in ids}
    parts = split_by_groups(ids, groups, {f"fold{f}": 1.0 / folds for f in range(folds)}, seed=cfg.train.seed)
    fold_of = {i: f for f in range(folds) for i in parts.get(f"fold{f}", [])}
    fold_of.update({i: folds - 1 for i in ids if i not in fold_of})  # rounding leftovers
    per_case: dict[str, torch.Tensor] = {}
    first_snaps: list[Path] = []
    for f in range(folds):
        held_out = [c for c in cases if fold_of[c.case_id] == f]
        if not held_out:
            continue
        train_ids = [i for i in data.labeled if fold_of.get(i, -1) != f]
        snaps = train_weak_snapshots(cfg, replace(data, labeled=train_ids), out_dir / f"fold{f}" / "snapshots",
                                     device=device)
        first_snaps = first_snaps or snaps
        preds = load_or_predict_weak(out_dir / f"fold{f}" / "heldout_preds.pt", snaps, held_out, image_size,
                                     spatial_dims, device)
        # split the concatenated samples back per case (a volume gives one sample per slice)
        start = 0
        for case in held_out:
            n = 1 if case.spatial_dims == spatial_dims else case.spatial_shape[slice_axis(case)]
            per_case[case.case_id] = preds[start:start + n]
            start += n
    return torch.cat([per_case[i] for i in ids]), first_snaps
