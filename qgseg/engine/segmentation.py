"""Training a segmentation network with any :class:`~qgseg.ssl.SegmentationMethod`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..data.augment import intensity_augment, spatial_augment
from ..data.case import Case
from ..data.preprocess import TensorBank
from ..data.run_data import RunData, prepare_run_data
from ..evaluation.inference import ModelSpec, Segmenter
from ..evaluation.metrics import foreground_dice
from ..models import build_model, count_parameters
from ..ssl.base import Batch, SegmentationMethod, Supervised, build_supervised_loss
from .trainer import BaseTrainer


class SegmentationTrainer(BaseTrainer):
    """Trains ``cfg.model`` on the run's labeled (and unlabeled) data with ``method``.

    Extend by subclassing (override :meth:`sample_batch` for another sampling scheme,
    :meth:`build_model` for a custom network) or by passing another ``method``.
    """

    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(self, cfg: RunConfig, run_dir: str | Path, fabric=None, method: SegmentationMethod | None = None,
                 data: RunData | None = None) -> None:
        super().__init__(cfg, run_dir, fabric)
        self.method = method
        self.data = data

    # ---------------------------------------------------------------- data
    def setup_data(self) -> None:
        d = self.cfg.data
        if self.data is None:
            self.data = prepare_run_data(d, self.cfg.output_dir)
        ds = self.data.dataset
        self.classes = list(d.classes or ds.classes)
        self.model_dims = len(d.image_size)
        self.fabric.print(self.data.describe())
        labeled_cases = [ds.load(i) for i in self.data.labeled]
        self.in_channels = labeled_cases[0].channels
        self.labeled_bank = TensorBank.from_cases(labeled_cases, d.image_size, d.normalize, d.resize, self.model_dims)
        self.unlabeled_bank: TensorBank | None = None
        self.val_cases: list[Case] = []
        rank, world = self.fabric.global_rank, self.fabric.world_size
        self.val_cases = [ds.load(i) for i in self.data.val[rank::world]]

    def load_unlabeled_bank(self) -> TensorBank:
        """Unlabeled images (training-split remainder + unlabeled split + extra dataset)."""
        d = self.cfg.data
        cases = [self.data.dataset.load(i) for i in self.data.unlabeled]
        if self.data.unlabeled_dataset is not None:
            cases += list(self.data.unlabeled_dataset)
        if not cases:
            raise ValueError("the method needs unlabeled data but the run has none "
                             "(set data.labeled to a subset, or data.unlabeled to a folder)")
        return TensorBank.from_cases(cases, d.image_size, d.normalize, d.resize, self.model_dims, with_labels=False)

    # ---------------------------------------------------------------- model
    @property
    def spec(self) -> ModelSpec:
        m, d = self.cfg.model, self.cfg.data
        return ModelSpec(name=m.name, spatial_dims=self.model_dims, in_channels=self.in_channels,
                         classes=self.classes, image_size=list(d.image_size), resize=d.resize,
                         normalize=d.normalize, features=list(m.features), dropout=m.dropout)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        model = build_model(m.name, self.model_dims, self.in_channels, len(self.classes), m.features, m.dropout,
                            m.pretrained)
        self.fabric.print(f"model {m.name} ({self.model_dims}D, {self.in_channels} -> {len(self.classes)} channels): "
                          f"{count_parameters(model):,} parameters")
        if self.method is None:
            self.method = Supervised(build_supervised_loss(self.cfg.train.loss))
        self.method = self.method.to(self.device)
        if self.method.uses_unlabeled and self.unlabeled_bank is None:
            self.unlabeled_bank = self.load_unlabeled_bank()
        return model

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "task": "segmentation"}

    def extra_state(self) -> dict[str, Any]:
        return {"method": self.method.state_dict()} if len(self.method.state_dict()) else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "method" in state:
            self.method.load_state_dict(state["method"])

    # ---------------------------------------------------------------- steps
    def sample_batch(self, bank: TensorBank, batch_size: int, augment: bool) -> Batch:
        idx = torch.randint(0, len(bank), (batch_size,), generator=self.gen)
        image, label = bank.batch(idx, self.cfg.data.image_size, self.gen)
        if augment:
            image, label = spatial_augment(image, label, self.gen, self.cfg.train.augment)
            image = intensity_augment(image, self.gen, self.cfg.train.augment)
        image = image.to(self.device)
        label = label.to(self.device) if label is not None else None
        return Batch(image, label)

    def training_step(self, iteration: int) -> dict[str, torch.Tensor]:
        bs = self.cfg.train.batch_size
        labeled = self.sample_batch(self.labeled_bank, bs, self.cfg.data.augment)
        unlabeled = None
        if self.method.uses_unlabeled:
            unlabeled = self.sample_batch(self.unlabeled_bank, bs, augment=False)
        return self.method.compute_losses(self.model, labeled, unlabeled, iteration)

    def validate(self, model: nn.Module) -> dict[str, float]:
        segmenter = Segmenter(model, self.spec, self.device)
        k = len(self.classes) - 1
        sums = torch.zeros(k + 1, dtype=torch.float64)
        for case in self.val_cases:
            sums[:k] += torch.from_numpy(foreground_dice(segmenter.predict(case), case.label, len(self.classes)))
            sums[k] += 1
        sums = self.fabric.all_reduce(sums.to(self.device), reduce_op="sum").cpu()
        per_class = (sums[:k] / sums[k].clamp_min(1)).tolist()
        metrics = {"val/dice": float(np.mean(per_class))}
        if k > 1:
            metrics.update({f"val/dice_{name}": v for name, v in zip(self.classes[1:], per_class)})
        return metrics
