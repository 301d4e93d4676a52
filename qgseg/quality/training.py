"""Training the quality predictor g(image, mask) -> Dice with the shared engine.

:class:`QualityTrainer` is a :class:`~qgseg.engine.trainer.BaseTrainer`: the optimiser (AdamW),
cosine schedule, validation, best-checkpoint selection on validation MAE, early stopping and
resumable checkpoints all come from the engine. What is specific here:

* data: labeled training images with their truth masks at the predictor input size, plus
  cached predictions of weak segmenter snapshots (:mod:`qgseg.quality.weak`);
* each step draws fresh corrupted masks from :class:`VariableQualitySampler` (targets = true
  Dice per class), so the predictor never sees the same (image, mask) pair twice;
* validation uses FIXED-seed masks of the validation cases (plus the weak snapshots' hard
  predictions on them), so validation MAE is comparable across iterations and runs.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from ..config import QualityConfig, RunConfig
from ..data.augment import intensity_augment, spatial_augment_many
from ..data.case import Case
from ..data.check import harmonise_run_cases
from ..data.loading import load_cases
from ..data.preprocess import TensorBank
from ..data.run_data import (
    RunData,
    group_of,
    prepare_run_data,
    require_validation,
    splits_record,
    write_splits,
)
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..engine.run_dir import prepare_run_dir
from ..engine.trainer import BaseTrainer
from .corruptions import dice_per_class
from .metrics import regression_metrics
from .predictor import (
    QualityPredictor,
    backbone_label,
    labels_to_fg_onehot,
    load_pretrained_backbone,
)
from .sampler import CATEGORY_NAMES, SamplerConfig, VariableQualitySampler
from .scoring import UNCERTAINTY_REFERENCE_KEY, hard_fg, predict_views
from .weak import as_unit, cross_fitted_weak, load_or_predict_weak, train_weak_snapshots

__all__ = ["QualityTrainer", "build_sampler", "draw_patches", "prepare_tensors", "predictor_size", "quality_run_config",
           "train_quality_predictor"]


# --------------------------------------------------------------------------- helpers
def predictor_size(cfg: RunConfig) -> list[int]:
    """Predictor input size: ``quality.image_size`` or the segmenter's ``data.image_size``."""
    return [int(s) for s in (cfg.quality.image_size or cfg.data.image_size)]


def build_sampler(q: QualityConfig, spatial_dims: int, num_fg: int, weak_available: bool) -> VariableQualitySampler:
    """Sampler whose "weak" category has probability exactly ``q.weak_probability`` when weak
    predictions exist; the other categories keep the ratios of ``q.probabilities``."""
    probs = {c: p for c, p in (q.probabilities or {}).items() if c != "weak"}
    base = SamplerConfig.from_dict({**probs, "weak": 0.0})  # normalises the non-weak categories
    wp = float(q.weak_probability) if weak_available else 0.0
    scaled = {c: getattr(base, c) * (1.0 - wp) for c in CATEGORY_NAMES if c != "weak"}
    cfg = SamplerConfig(**scaled, weak=wp, soft_fraction=q.soft_fraction, balance_bins=q.balance_bins)
    return VariableQualitySampler(cfg, spatial_dims, num_fg)


def prepare_tensors(cases: Sequence[Case], size: Sequence[int], normalize: str, spatial_dims: int,
                    num_classes: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Labeled cases -> normalised images ``(N, C, *size)``, truth foreground one-hot ``(N, K, *size)``, ids.

    Goes through :class:`TensorBank` (same normalisation/resizing as the segmenter); 3D cases
    fed to a 2D predictor give one sample per slice.
    """
    bank = TensorBank.from_cases(cases, size, normalize, True, spatial_dims)
    images = torch.stack(bank.images)
    truth = labels_to_fg_onehot(torch.stack(bank.labels), num_classes)
    return images, truth.float(), bank.ids


def draw_patches(bank: TensorBank, idx: torch.Tensor, size: Sequence[int], gen: torch.Generator,
                 fg_oversample: float, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches of ``size`` of samples ``idx``: images ``(B, C, *size)``, truth foreground one-hot
    ``(B, K, *size)``; a ``fg_oversample`` share centred on foreground (:meth:`TensorBank.batch`).

    Z-scored samples are z-scored again over each patch: the critic normalises the segmenter's
    patches on their own (:meth:`~qgseg.guidance.critic.QualityCritic.prepare_image`) and the scorer
    normalises the box it scores, so g learns on the intensities it will be given.
    """
    images, labels = bank.batch(idx, size, gen, fg_oversample)
    z = [k for k, i in enumerate(idx.tolist()) if bank.modes[i] == "zscore"]
    if z:
        dims = tuple(range(2, images.ndim))
        sel = images[z]
        images[z] = (sel - sel.mean(dims, keepdim=True)) / sel.std(dims, keepdim=True, unbiased=False).clamp_min(1e-6)
    return images, labels_to_fg_onehot(labels, num_classes).float()


def quality_run_config(cfg: RunConfig) -> RunConfig:
    """Copy of ``cfg`` whose ``train`` section drives the predictor (AdamW, cosine, quality.lr ...).

    ``iterations``/``val_every`` are filled in by :meth:`QualityTrainer.setup_data` once the
    number of training samples is known (an epoch = N * masks_per_image / batch_size steps).
    """
    q = cfg.quality
    out = copy.deepcopy(cfg)
    t = out.train
    t.optimizer, t.schedule, t.lr, t.weight_decay = "adamw", "cosine", q.lr, q.weight_decay
    t.batch_size, t.early_stop_patience, t.ema, t.warmup = q.batch_size, q.early_stop_patience, None, 0
    t.early_stop_start = q.early_stop_start
    t.checkpoint_every = None
    t.select = "best"  # why: the predictor is always selected on validation MAE (train.select is the segmenter's)
    return out


# --------------------------------------------------------------------------- trainer
class QualityTrainer(BaseTrainer):
    """Trains a :class:`QualityPredictor` on sampled (image, corrupted mask, true Dice) triples.

    Args:
        cfg: the run config (its ``quality`` section; ``train`` is rewritten by
            :func:`quality_run_config`).
        data: the run's data (labeled -> training, val -> validation); prepared when ``None``.
        weak_train / weak_val: cached weak predictions ``(N, S, K, *size)`` (uint8 or float)
            aligned with the training / validation samples, or ``None``.
        train_cases / val_cases: already loaded cases (avoids reading them twice).
    """

    monitor = "val/mae"
    monitor_mode = "min"
    derived_config_keys = ("train.iterations", "train.val_every")  # from quality.epochs / val_every_epochs

    def __init__(self, cfg: RunConfig, run_dir: str | Path, data: RunData | None = None,
                 weak_train: torch.Tensor | None = None, weak_val: torch.Tensor | None = None,
                 train_cases: Sequence[Case] | None = None, val_cases: Sequence[Case] | None = None,
                 fabric=None) -> None:
        super().__init__(quality_run_config(cfg), run_dir, fabric)
        self.data = data
        self.weak_train = weak_train
        self.weak_val = weak_val
        self._train_cases = train_cases
        self._val_cases = val_cases
        self._prev_step_start: float | None = None
        self._prev_gen_s = 0.0
        self._dice_loss = DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)

    # ---------------------------------------------------------------- data
    def setup_data(self) -> None:
        cfg, q = self.cfg, self.cfg.quality
        if self.data is None:
            self.data = prepare_run_data(cfg.data, cfg.output_dir)
        require_validation(self.data, None)
        if self.is_main:
            write_splits(self.run_dir, self.data)
        ds = self.data.dataset
        self.classes = list(cfg.data.classes or ds.classes)
        self.size = predictor_size(cfg)
        self.spatial_dims = len(self.size)
        train_cases = self._train_cases or [ds.load(i) for i in self.data.labeled]
        val_cases = self._val_cases or [ds.load(i) for i in self.data.val]
        if not val_cases:
            raise ValueError("the quality predictor needs validation cases (data.val_split is empty)")
        self.image_channels = harmonise_run_cases(train_cases, val_cases, self.fabric.print)
        nc = len(self.classes)
        # why patches with data.resize false: the critic scores the segmenter's training patches, so g learns on
        # (image patch, mask patch) pairs of that size and resolution (and clinical volumes never become one tensor)
        self.bank: TensorBank | None = None
        if cfg.data.resize:
            self.images, self.truth, self.train_ids = prepare_tensors(train_cases, self.size, cfg.data.normalize,
                                                                      self.spatial_dims, nc)
        else:
            if self.weak_train is not None:
                raise ValueError("weak predictions are whole-image maps: set quality.weak_probability: 0 when the "
                                 "predictor trains on patches (data.resize: false)")
            self.bank = TensorBank.from_cases(train_cases, self.size, cfg.data.normalize, False, self.spatial_dims)
            self.train_ids = self.bank.ids
        if self.weak_train is not None and self.weak_train.shape[0] != len(self.train_ids):
            raise ValueError(f"weak predictions for {self.weak_train.shape[0]} samples, "
                             f"training has {len(self.train_ids)}")
        self.sampler = build_sampler(q, self.spatial_dims, nc - 1, self.weak_train is not None)

        # Fixed validation set: seeded corrupted masks + weak snapshots' hard predictions.
        if self.bank is None:
            v_images, v_truth, _ = prepare_tensors(val_cases, self.size, cfg.data.normalize, self.spatial_dims, nc)
        else:  # one fixed patch per validation sample, around its foreground (seeded): comparable across runs
            v_bank = TensorBank.from_cases(val_cases, self.size, cfg.data.normalize, False, self.spatial_dims)
            v_images, v_truth = draw_patches(v_bank, torch.arange(len(v_bank)), self.size,
                                             torch.Generator().manual_seed(q.eval_seed), 1.0, nc)
        fixed_sampler = build_sampler(q, self.spatial_dims, nc - 1, False)
        fixed = fixed_sampler.fixed_masks(v_truth, q.eval_seed, q.eval_masks_per_image)
        idx, masks, dice = [fixed.index], [fixed.masks], [fixed.dice]
        if self.weak_val is not None:
            for s in range(self.weak_val.shape[1]):
                hard = hard_fg(as_unit(self.weak_val[:, s]))
                idx.append(torch.arange(v_images.shape[0]))
                masks.append(hard)
                dice.append(dice_per_class(hard, v_truth))
        self.val_images = v_images
        # which rows are weak-network masks: validation MAE is also logged per part, because the
        # test report keeps them apart (synthetic vs real networks) and they can move oppositely
        self.val_is_weak = torch.cat([torch.zeros(len(fixed), dtype=torch.bool)]
                                     + [torch.ones(len(m), dtype=torch.bool) for m in masks[1:]])
        self.val_index = torch.cat(idx)
        self.val_masks = torch.cat(masks)
        self.val_dice = torch.cat(dice)

        # Epoch = every training image seen masks_per_image times.
        n = len(self.train_ids)
        self.epoch_len = max(1, math.ceil(n * q.masks_per_image / q.batch_size))
        self.iterations = cfg.train.iterations = q.epochs * self.epoch_len
        self.val_every = cfg.train.val_every = max(1, q.val_every_epochs * self.epoch_len)
        self.checkpoint_every = self.val_every
        self.fabric.print(f"quality predictor: {n} training samples, {len(self.val_masks)} validation masks, "
                          f"{self.iterations} iterations ({q.epochs} epochs x {self.epoch_len}), "
                          f"weak snapshots: {0 if self.weak_train is None else self.weak_train.shape[1]}")

    # ---------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        q = self.cfg.quality
        net_size = q.roi_size or self.size
        model = QualityPredictor(self.spatial_dims, self.image_channels, len(self.classes) - 1,
                                 backbone=q.backbone, depth=q.depth, width=q.width, no_max_pool=min(net_size) < 64,  # why: keep resolution on tiny inputs
                                 truth_decoder=q.truth_map_weight > 0,
                                 readout=q.readout if q.truth_map_weight > 0 and q.readout != "auto" else "fused",
                                 roi_size=q.roi_size, roi_margin=q.roi_margin, roi_min_fraction=q.roi_min_fraction)
        if q.pretrained:
            load_pretrained_backbone(model, q.pretrained)
        return model

    def checkpoint_meta(self) -> dict[str, Any]:
        """What the checkpoint records. ``labeled_ids``/``labeled_groups``/``dataset_root`` say
        which cases it learnt from (its labeled training cases; the weak snapshots are trained on
        the same cases), so :func:`qgseg.quality.leak.check_predictor_leak` can refuse a guided
        run whose unlabeled, validation or test cases are among them."""
        model = self._raw_model()
        ds = self.data.dataset
        ids = sorted({c.case_id for c in self._train_cases} if self._train_cases else set(self.data.labeled))
        return {"task": "quality", "predictor": model.config(), "classes": self.classes,
                "image_channels": self.image_channels, "image_size": list(self.size),
                "normalize": self.cfg.data.normalize, "spatial_dims": self.spatial_dims,
                "resize": self.bank is None, "train_samples": len(self.train_ids), "dataset": ds.name,
                "dataset_root": str(Path(ds.root).resolve()), "labeled_ids": ids,
                "labeled_groups": sorted({group_of(ds, i) for i in ids}), "splits": splits_record(self.data)}

    # ---------------------------------------------------------------- steps
    def training_step(self, iteration: int) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        # Fraction of the PREVIOUS full step (incl. backward/optimiser) spent generating masks.
        frac = (self._prev_gen_s / (start - self._prev_step_start)) if self._prev_step_start else float("nan")
        q = self.cfg.quality
        idx = torch.randint(0, len(self.train_ids), (q.batch_size,), generator=self.gen)
        if self.bank is None:
            images, truth = self.images[idx], self.truth[idx]
        else:
            images, truth = draw_patches(self.bank, idx, self.size, self.gen, self.cfg.data.fg_oversample,
                                         len(self.classes))
        weak = as_unit(self.weak_train[idx]) if self.weak_train is not None else None
        # why: the same flips/rotation/scaling for image, truth and weak maps, so the predictor
        # sees more varied (image, mask) pairs than the few labeled images give.
        flat_weak = None if weak is None else weak.flatten(1, 2)  # (B, S*K, *size): one channel per map
        images, truth, flat_weak = spatial_augment_many([images, truth, flat_weak], ["image", "hard", "soft"],
                                                        self.gen, q.augment)
        weak = None if weak is None else flat_weak.view_as(weak)
        images = intensity_augment(images, self.gen, q.augment)

        t0 = time.perf_counter()
        truth = truth.to(self.device)
        weak = weak.to(self.device) if weak is not None else None
        if q.balance_bins:
            batch = self.sampler.balanced_sample(truth, self.gen, weak=weak, groups=idx)
        else:  # groups: the batch is drawn with replacement, so a swap must not pick the same image
            batch = self.sampler.sample(truth, self.gen, weak=weak, groups=idx)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._prev_gen_s = time.perf_counter() - t0
        self._prev_step_start = start

        truth_logits = None
        if q.truth_map_weight > 0:
            pred, truth_logits = self.model(images.to(self.device), batch.masks, return_truth=True)
        else:
            pred = self.model(images.to(self.device), batch.masks)
        target = batch.dice.to(pred.dtype)
        valid = torch.isfinite(target)
        if q.loss == "mse":
            loss = F.mse_loss(pred[valid], target[valid])
        else:
            loss = F.smooth_l1_loss(pred[valid], target[valid], beta=0.1)
        out = {"mae": (pred.detach() - target).abs()[valid].mean(), "target_dice": target[valid].mean()}
        if truth_logits is not None:
            # the decoder works in the network's frame (the mask-centred crop with quality.roi_size)
            dense = self.truth_map_loss(truth_logits, self._raw_model().input_view(truth, batch.masks))
            out["truth_map_loss"] = dense.detach()
            loss = loss + q.truth_map_weight * dense
        out["loss"] = loss
        if not math.isnan(frac):
            out["generation_fraction"] = torch.tensor(frac)
        return out

    def truth_map_loss(self, logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Dense loss of the truth-map decoder: per-pixel BCE + MONAI soft Dice (sigmoid, per class)."""
        truth = truth.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, truth) + self._dice_loss(logits, truth)

    def predict_val(self, model: nn.Module, images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predictions on the fixed validation masks (``images`` overrides the val images), per readout:
        ``{"fused": ..., "agreement": ...}`` for decoder models, ``{"fused": ...}`` otherwise."""
        images = self.val_images if images is None else images
        out: dict[str, list[torch.Tensor]] = {}
        for x, m in self._val_batches(images):
            for name, dice in model(x, m, return_readouts=True).items():  # every readout from one pass
                out.setdefault(name, []).append(dice.float().cpu())
        return {k: torch.cat(v) for k, v in out.items()}

    def _val_batches(self, images: torch.Tensor):
        bs = max(1, self.cfg.quality.batch_size)
        for i in range(0, len(self.val_index), bs):
            yield images[self.val_index[i:i + bs]].to(self.device), self.val_masks[i:i + bs].to(self.device)

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of the model's readout. With ``quality.readout: auto`` the readout with
        the lower validation MAE is chosen here and stored in the model (hence in its checkpoint)."""
        preds = self.predict_val(model)
        maes = {k: regression_metrics(v.numpy(), self.val_dice.numpy())["mae"] for k, v in preds.items()}
        raw = self._raw_model()
        if len(preds) > 1 and self.cfg.quality.readout == "auto":
            raw.readout = min(maes, key=lambda k: maes[k])
        chosen = preds[getattr(raw, "readout", "fused")].numpy()
        m = regression_metrics(chosen, self.val_dice.numpy())
        out = {"val/mae": m["mae"], "val/rmse": m["rmse"], "val/pearson": m["pearson"], "val/spearman": m["spearman"]}
        if len(preds) > 1:
            out.update({f"val/mae_{k}": v for k, v in maes.items()})
        if self.val_is_weak.any():
            for part, rows in (("synthetic", ~self.val_is_weak), ("weak", self.val_is_weak)):
                out[f"val/mae_{part}"] = regression_metrics(chosen[rows.numpy()], self.val_dice[rows].numpy())["mae"]
        return out

    def add_uncertainty_reference(self, path: str | Path) -> float | None:
        """Store in checkpoint ``path`` the 90th percentile of its score uncertainty (the spread over
        flipped views, :func:`~qgseg.quality.scoring.predict_views`) on this trainer's fixed
        validation masks: the reference ``qgseg quality score`` calls a score "unsure" against.
        Done once for the final checkpoint (the views cost 1 + spatial_dims passes), atomically;
        returns the value, or ``None`` when the checkpoint already has it."""
        state = load_checkpoint(path)
        meta = state.get("meta") or {}
        if meta.get(UNCERTAINTY_REFERENCE_KEY) is not None:
            return None
        model = QualityPredictor.from_config(meta["predictor"])
        model.load_state_dict(state["model"])
        model.to(self.device).eval()
        with torch.no_grad():
            spread = torch.cat([predict_views(model, x, m).std(0, unbiased=False).cpu()
                                for x, m in self._val_batches(self.val_images)])
        value = float(torch.quantile(spread.flatten(), 0.9))
        state["meta"] = {**meta, UNCERTAINTY_REFERENCE_KEY: value}
        save_checkpoint(state, path)
        return value


# --------------------------------------------------------------------------- workflow
def _print_summary(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    print("-" * 72)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print("-" * 72)


def _fmt(x: Any) -> str:
    try:
        return f"{float(x):.3f}"
    except (TypeError, ValueError):
        return str(x)


def chain_pretraining(cfg: RunConfig, run_dir: Path, resume: bool, data: RunData | None = None
                      ) -> dict[str, Any] | None:
    """With ``quality.pretrain.steps > 0`` and no ``quality.pretrained``: pretrain the encoder into
    ``<run>/pretrain/encoder.pt`` (reused on resume) and point ``cfg.quality.pretrained`` at it.
    Returns the pretraining record (``<file>.json``), or ``None`` when nothing was pretrained."""
    import json

    q = cfg.quality
    if q.pretrain.steps <= 0 or q.pretrained:
        return None
    from .pretrain import pretrain_encoder

    path = run_dir / "pretrain" / "encoder.pt"
    record = path.with_suffix(".pt.json")
    if resume and path.is_file() and record.is_file():
        print(f"pretrained encoder reused: {path}")
        info = json.loads(record.read_text())
    else:
        res = pretrain_encoder(cfg, path, data=data)
        print(f"pretrained encoder: {res.steps} steps on {res.images} training images, restoration loss "
              f"{res.first_loss:.4f} -> {res.final_loss:.4f}, {res.wall_s:.0f} s -> {path}")
        info = json.loads(record.read_text())
    q.pretrained = str(path)
    return info


def train_quality_predictor(cfg: RunConfig, run_dir: str | Path | None = None, resume: bool = False,
                            data: RunData | None = None, evaluate: bool = True,
                            overwrite: bool = False) -> dict[str, Any]:
    """Phase 1 end to end: weak snapshots -> predictor training -> evaluation on the test split.
    ``run_dir`` must not hold a run unless ``resume`` or ``overwrite`` (:func:`prepare_run_dir`).

    Writes under ``run_dir`` (default ``<output_dir>/<name>``): ``weak/`` (snapshots + cached
    predictions), ``checkpoints/`` (best.ckpt selected on validation MAE), ``logs/``, and
    ``eval/quality_eval.{json,md}`` with plots. Returns a summary dict.
    """
    from .evaluation import evaluate_quality, find_ph2_fixed, largest_errors
    from .scoring import load_quality_predictor

    start = time.time()
    run_dir = Path(run_dir or Path(cfg.output_dir) / cfg.name)
    prepare_run_dir(run_dir, resume, overwrite)
    data = data or prepare_run_data(cfg.data, cfg.output_dir)
    require_validation(data, None)  # before the weak snapshots are trained
    ds, q = data.dataset, cfg.quality
    size = predictor_size(cfg)
    sd = len(size)
    show = cfg.runtime.progress
    train_cases = load_cases(ds, data.labeled, "loading labeled cases", show)
    val_cases = load_cases(ds, data.val, "loading validation cases", show)
    harmonise_run_cases(train_cases, val_cases)  # before the weak snapshots train on them
    pretraining = chain_pretraining(cfg, run_dir, resume, data)
    device = "cuda" if (cfg.runtime.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()) else "cpu"

    # 1. weak snapshots + their cached predictions (the predictor's "weak" category)
    t0 = time.time()
    weak_train = weak_val = None
    snaps: list[Path] = []
    if q.weak_probability > 0 and q.weak_epochs and not cfg.data.resize:
        print("note: no weak snapshots: their cached predictions are whole-image maps and the predictor trains on "
              "patches (data.resize: false); their share of the masks goes to the synthetic corruptions")
    elif q.weak_probability > 0 and q.weak_epochs:
        if q.weak_folds > 1:
            weak_train, snaps = cross_fitted_weak(cfg, data, train_cases, run_dir / "weak", size, sd, q.weak_folds,
                                                  device)
        else:
            snaps = train_weak_snapshots(cfg, data, run_dir / "weak" / "snapshots")
            weak_train = load_or_predict_weak(run_dir / "weak" / "train_preds.pt", snaps, train_cases, size, sd,
                                              device)
        weak_val = load_or_predict_weak(run_dir / "weak" / "val_preds.pt", snaps, val_cases, size, sd, device)
    weak_s = time.time() - t0

    # 2. the predictor
    trainer = QualityTrainer(cfg, run_dir, data=data, weak_train=weak_train, weak_val=weak_val,
                             train_cases=train_cases, val_cases=val_cases)
    fit = trainer.fit(resume=resume)
    result: dict[str, Any] = {"run_dir": str(run_dir), "best_val_mae": fit.best_metric,
                              "best_iteration": fit.best_iteration, "iterations": trainer.iterations,
                              "stopped_early": fit.stopped_early, "weak_snapshots": [str(p) for p in snaps],
                              "weak_wall_s": weak_s, "train_wall_s": fit.wall_s,
                              "checkpoint": str(fit.best_path), "pretraining": pretraining}
    if trainer.is_main:
        ref = trainer.add_uncertainty_reference(fit.best_path)
        if ref is not None:
            print(f"score uncertainty reference (90th percentile on validation): {ref:.4f}, in {fit.best_path}")
    if not trainer.is_main or not evaluate:
        return result

    # 3. evaluation on the test split: synthetic + unseen real networks + shortcuts + PH2 fixed set
    t0 = time.time()
    scorer = load_quality_predictor(fit.best_path, trainer.device, tta=q.eval_tta)
    real: list[Path] = []
    if q.eval_real_networks and q.weak_epochs:
        real = train_weak_snapshots(cfg, data, run_dir / "eval" / "unseen_snapshots", seed=cfg.train.seed + 101,
                                    model_name=q.eval_weak_model, epochs=q.eval_weak_epochs)
    test_cases = load_cases(ds, data.test, "loading test cases", cfg.runtime.progress)
    report = evaluate_quality(scorer, test_cases, run_dir / "eval", seed=q.eval_seed, k=q.eval_masks_per_image,
                              real_snapshots=real, train_cases=train_cases, ph2_fixed=find_ph2_fixed(ds.root),
                              progress=cfg.runtime.progress)
    result.update({"eval": {k: v for k, v in report.items() if k != "tables"}, "eval_wall_s": time.time() - t0,
                   "wall_s": time.time() - start})

    syn = report["synthetic"]["all"]
    rows = [("data", f"{ds.name}: {len(data.labeled)} train / {len(data.val)} val / {len(data.test)} test cases"),
            ("predictor", f"{backbone_label(q.backbone, q.depth)} width {q.width or 'standard'}, input {size}"),
            ("weak snapshots", f"{len(snaps)} (epochs {sorted(q.weak_epochs)}), {weak_s:.0f} s"),
            ("training", f"{fit.iterations_done}/{trainer.iterations} iterations, best val MAE "
                         f"{_fmt(fit.best_metric)} @ {fit.best_iteration}, {fit.wall_s:.0f} s"),
            ("test synthetic", f"MAE {_fmt(syn['mae'])}  Spearman {_fmt(syn['spearman'])}  "
                               f"Pearson {_fmt(syn['pearson'])}  AUROC<0.7 {_fmt(syn.get('auroc_0.7'))}  "
                               f"(n={syn['n']})")]
    rows += [("largest error", line) for line in largest_errors(report["synthetic"])]
    if "truth_map" in report:
        tm = report["truth_map"]
        low = min(tm["by_group"].items(), key=lambda kv: kv[1]) if "by_group" in tm else None
        rows.append(("recognition", f"Dice of its estimated truth (true mask given) {_fmt(tm['dice'])}"
                                    + (f"; lowest group {low[0]}: {_fmt(low[1])}" if low else "")))
    unc = report["synthetic"].get("uncertainty")
    if unc:
        cov = unc["mae_at_coverage"]
        rows.append(("score certainty", f"MAE of the 50% / 80% most certain scores {_fmt(cov['0.5'])} / "
                                        f"{_fmt(cov['0.8'])}; AUROC for errors > {unc['error_threshold']:g} "
                                        f"{_fmt(unc['auroc_error'])}"
                                        + (f"; unsure {unc['unsure_fraction']:.0%}" if "unsure_fraction" in unc
                                           else "")))
    if "real" in report:
        r = report["real"]["all"]
        rows.append(("test real nets", f"MAE {_fmt(r['mae'])}  Spearman {_fmt(r['spearman'])}  (n={r['n']})"))
    if "mask_only" in report:
        mo = report["mask_only"]
        rows.append(("mask-only base", f"MAE {_fmt(mo['mae'])}  Spearman {_fmt(mo['spearman'])}"))
    sc = report["shortcuts"]
    rows.append(("shortcut |Δ|", f"black image {_fmt(sc['black_image']['mean_abs_change'])}, "
                                 f"shuffled images {_fmt(sc['shuffled_images']['mean_abs_change'])}"))
    if "ph2_fixed" in report:
        p = report["ph2_fixed"]["all"]
        rows.append(("PH2 fixed set", f"MAE {_fmt(p['mae'])}  Pearson {_fmt(p['pearson'])}  "
                                      f"Spearman {_fmt(p['spearman'])}  AUROC<0.7 {_fmt(p.get('auroc_0.7'))}"))
    rows += [("wall time", f"{time.time() - start:.0f} s"), ("run folder", str(run_dir))]
    print()
    print(report["tables"]["synthetic"])
    print()
    _print_summary(rows, "qgseg quality summary")
    print(f"see {run_dir}/eval/quality_eval.md, eval/plots/, checkpoints/best.ckpt")
    return result

