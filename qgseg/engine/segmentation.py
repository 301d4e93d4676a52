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
from ..data.check import harmonise_channels, harmonise_run_cases
from ..data.loading import load_cases
from ..data.pool import (
    ImagePool,
    LabeledLoader,
    LabeledPool,
    PoolLoader,
    UnlabeledViews,
    draw_unlabeled,
    labeled_bytes,
    pool_workers,
)
from ..data.preprocess import TensorBank
from ..data.run_data import (
    RunData,
    prepare_run_data,
    require_validation,
    splits_record,
    write_splits,
)
from ..evaluation.inference import ModelSpec, Segmenter
from ..evaluation.metrics import foreground_dice
from ..models import build_model, count_parameters
from ..ssl.base import Batch, SegmentationMethod, UnlabeledBatch
from .trainer import BaseTrainer

#: per-step logs of guidance that are also averaged per validation interval (history, console)
INTERVAL_LOGS = ("q_pseudo", "kept", "lambda", "lambda_qar", "lambda_qw", "q_student")


class SegmentationTrainer(BaseTrainer):
    """Trains ``cfg.model`` on the run's labeled (and unlabeled) data with ``method``.

    ``method`` defaults to the run config's (``ssl.method``, wrapped by quality guidance when
    ``guidance.qar`` / ``guidance.qw``; see :func:`qgseg.guidance.build_run_method`). Extend by
    subclassing (override :meth:`sample_batch` / :meth:`sample_unlabeled` for another sampling
    scheme, :meth:`build_model` for a custom network) or by passing another ``method``.
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
        require_validation(self.data, self.cfg.train.select)
        if self.is_main:
            write_splits(self.run_dir, self.data)
        ds = self.data.dataset
        self.classes = list(d.classes or ds.classes)
        self.model_dims = len(d.image_size)
        self.fabric.print(self.data.describe())
        for note in ds.notes:
            self.fabric.print(f"note: {note}")
        show = self.is_main and self.cfg.runtime.progress
        ids, lazy = self.data.labeled, d.lazy_labeled
        # lazy (or auto): the first case alone is read now, to estimate the set's size and vote on channels
        labeled_cases = load_cases(ds, ids[:1] if lazy else ids, "loading labeled cases", show)
        if lazy == "auto":
            lazy = bool(ids) and labeled_bytes(labeled_cases[0], len(ids), d.image_size, d.normalize, d.resize,
                                               self.model_dims) > d.labeled_cache_mb * 2 ** 20
            if not lazy:
                labeled_cases += load_cases(ds, ids[1:], "loading labeled cases", show)
        self.unlabeled_pool: ImagePool | None = None
        self.val_cases: list[Case] = []
        rank, world = self.fabric.global_rank, self.fabric.world_size
        self.val_cases = load_cases(ds, self.data.val[rank::world], "loading validation cases", show)
        # one grey JPEG among RGB photos would break batching: repeat it to RGB (others refuse, naming the file)
        self.labeled_bank: TensorBank | None = None
        self.labeled_pool: LabeledPool | None = None
        if lazy:  # why with the validation cases: one labeled case is a poor majority for the channel count
            self.in_channels = harmonise_run_cases(labeled_cases + self.val_cases, [], self.fabric.print)
            self.labeled_pool = LabeledPool([(ds, i) for i in ids], d.image_size, d.normalize, d.resize,
                                            self.model_dims, d.labeled_cache_mb, self.in_channels, d.fg_oversample)
            self.fabric.print(f"labeled cases: {len(ids)} read lazily (cache {d.labeled_cache_mb} MB)")
        else:
            self.in_channels = harmonise_run_cases(labeled_cases, self.val_cases, self.fabric.print)
            self.labeled_bank = TensorBank.from_cases(labeled_cases, d.image_size, d.normalize, d.resize,
                                                      self.model_dims)
        # the pseudolabel probe of guided runs: labeled cases spread over the list, scored as if unlabeled
        n_probe = self.cfg.guidance.probe_cases if self.cfg.guidance.enabled else 0
        picks = list(range(0, len(ids), max(1, len(ids) // n_probe)))[:n_probe] if n_probe > 0 else []
        if lazy:
            self.probe_cases = load_cases(ds, [ids[i] for i in picks], "loading probe cases", show) if picks else []
            harmonise_channels(self.probe_cases, self.in_channels)
        else:
            self.probe_cases = [labeled_cases[i] for i in picks]

    def load_unlabeled_pool(self) -> ImagePool:
        """Unlabeled images (training-split remainder + unlabeled split + extra dataset), read lazily."""
        d = self.cfg.data
        sources = [(self.data.dataset, i) for i in self.data.unlabeled]
        extra = self.data.unlabeled_dataset
        if extra is not None:
            sources += [(extra, i) for i in self.data.extra_unlabeled_ids]
        if not sources:
            raise ValueError("the method needs unlabeled data but the run has none "
                             "(set data.labeled to a subset, or data.unlabeled to a folder)")
        return ImagePool(sources, d.image_size, d.normalize, d.resize, self.model_dims, self.cfg.ssl.pool_cache_mb,
                         channels=self.in_channels)

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
            from ..guidance import build_run_method

            self.method = build_run_method(self.cfg, len(self.classes), self.data, self.device)
        critic = getattr(self.method, "critic", None)
        if critic is not None:
            critic.check_compatible(self.classes, self.in_channels, self.model_dims)
        self.method.configure(self.iterations, self.gen)
        if self.method.uses_unlabeled and self.unlabeled_pool is None:
            self.unlabeled_pool = self.load_unlabeled_pool()
            self.fabric.print(f"unlabeled pool: {len(self.unlabeled_pool)} samples, read lazily "
                              f"(cache {self.cfg.ssl.pool_cache_mb} MB)")
        self.fabric.print(f"method: {self.method.name}")
        return model

    def build_extra_networks(self) -> dict[str, nn.Module]:
        """The method's further trained networks: same architecture, their own initialisation."""
        m = self.cfg.model
        nets = {}
        for k, name in enumerate(self.method.extra_students, start=1):
            state = torch.get_rng_state()
            torch.manual_seed(self.cfg.train.seed * 7919 + k)  # why: a different init is what CPS relies on
            nets[name] = build_model(m.name, self.model_dims, self.in_channels, len(self.classes), m.features,
                                     m.dropout, m.pretrained)
            torch.set_rng_state(state)
        return nets

    def _val_scorer(self):
        """g as a case scorer (same weights as the critic) for guided runs, else ``None``."""
        critic = getattr(self.method, "critic", None)
        if critic is None:
            return None
        if getattr(self, "_scorer", None) is None:
            from ..quality.scoring import QualityScorer

            self._scorer = QualityScorer(critic.model, critic.meta, critic.model_device)
        return self._scorer

    def probe_pseudolabels(self, scorer, cases: list[Case] | None = None,
                           weighted: bool | None = None) -> dict[str, float]:
        """Does g judge the pseudolabels it weights? The method's pseudolabel network
        (:meth:`~qgseg.ssl.SegmentationMethod.pseudolabel_network`; the student for QAR alone) segments
        the probe's labeled cases as if they were unlabeled, g scores those masks, and the scores meet
        the true Dice: see :func:`~qgseg.guidance.probe_metrics` for what is logged. Why labeled cases:
        only they have a truth; g was trained on their corrupted masks, not on these networks' outputs,
        and ``g_mae_val`` gives the same check on validation cases g never saw.

        ``cases`` (default: the probe's) and ``weighted`` (default: ``guidance.qw``) let an analysis
        probe other labeled cases, e.g. the hidden labels of unlabeled cases after training
        (``benchmarks/study_probe_hidden.py``)."""
        from ..guidance import probe_metrics

        nets = self.raw_networks()
        net = self.method.pseudolabel_network(nets) or nets["student"]
        segmenter = Segmenter(net, self.spec, self.device)
        predicted, true = [], []
        for case in self.probe_cases if cases is None else cases:
            mask = segmenter.predict(case)
            true.append(foreground_dice(mask, case.label, len(self.classes)))
            predicted.append(np.asarray(scorer.score(case, mask), dtype=np.float64))
        g = self.cfg.guidance
        return probe_metrics(np.stack(predicted), np.stack(true), g.qw_power, g.qw_threshold,
                             per_class=g.qw_per_class, weighted=g.qw if weighted is None else weighted,
                             keep=g.qw_keep)

    def setup(self) -> None:
        super().setup()
        self.method.setup(self._raw_model())  # teachers start as copies of the student
        self.method = self.method.to(self.device)
        self._interval: dict[str, list[float]] = {}

    def after_optimizer_step(self, iteration: int) -> None:
        self.method.after_optimizer_step(self.raw_networks(), iteration)

    def networks(self) -> dict[str, nn.Module]:
        """Every trained network as set up by Fabric, ``"student"`` first."""
        return {"student": self.model, **self.extra_networks}

    def raw_networks(self) -> dict[str, nn.Module]:
        return {"student": self._raw_model(), **self.raw_extra_networks()}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "task": "segmentation", "method": self.method.name,
                "splits": splits_record(self.data)}

    def has_validation(self) -> bool:
        return bool(self.data.val)

    def extra_state(self) -> dict[str, Any]:
        return {"method": self.method.state_dict()} if len(self.method.state_dict()) else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "method" in state:
            self.method.load_state_dict(state["method"])

    # ---------------------------------------------------------------- steps
    def sample_batch(self, bank: TensorBank | None, batch_size: int, augment: bool) -> Batch:
        """A labeled batch from ``bank``, or with ``bank`` None from the lazy labeled path
        (``data.lazy_labeled``): read by ``ssl.pool_workers`` DataLoader workers, each batch drawn from a
        generator per step (see :mod:`qgseg.data.pool`). The augmentation is drawn from ``self.gen`` in both."""
        if bank is None:
            loader = getattr(self, "_labeled_loader", None)
            if loader is None or loader.batch_size != batch_size:
                workers = pool_workers(self.cfg.ssl.pool_workers, self.device)
                # why the scheduler's count: the iterations done, restored on resume (as for the unlabeled pool)
                loader = self._labeled_loader = LabeledLoader(
                    self.labeled_pool, batch_size, self.cfg.train.seed, self.fabric.global_rank,
                    self.scheduler.last_epoch, workers, self.cfg.ssl.pool_prefetch, self.device.type == "cuda")
            image, label = loader.next()
        else:
            idx = torch.randint(0, len(bank), (batch_size,), generator=self.gen)
            image, label = bank.batch(idx, self.cfg.data.image_size, self.gen, self.cfg.data.fg_oversample)
        if augment:
            image, label = spatial_augment(image, label, self.gen, self.cfg.train.augment)
            image = intensity_augment(image, self.gen, self.cfg.train.augment)
        image = image.to(self.device)
        label = label.to(self.device) if label is not None else None
        return Batch(image, label)

    def sample_unlabeled(self, batch_size: int) -> UnlabeledBatch:
        """A weak view (flips, rotation, scaling with ``train.augment``'s spatial settings) of random pool
        samples and, when the method asks for it, a strong view: the same geometry with the photometric
        augmentation of ``ssl.strong``.

        With ``ssl.pool_workers`` > 0 the batches are read ahead by DataLoader workers (same views,
        drawn from a generator per step instead of the trainer's; see :mod:`qgseg.data.pool`)."""
        s = self.cfg.ssl
        views = UnlabeledViews(self.cfg.train.augment if self.cfg.data.augment else None,
                               s.strong if self.method.needs_strong_view else None)
        workers = pool_workers(s.pool_workers, self.device)
        if workers == 0:
            image, strong, scale, shift, eight_bit = draw_unlabeled(self.unlabeled_pool, batch_size, self.gen, views)
        else:
            loader = getattr(self, "_pool_loader", None)
            if loader is None or loader.batch_size != batch_size:
                # why the scheduler's count: it is the iterations done, restored on resume, so a resumed run
                # reads on from the step where the killed one stopped
                loader = self._pool_loader = PoolLoader(
                    self.unlabeled_pool, batch_size, self.cfg.train.seed, self.fabric.global_rank,
                    self.scheduler.last_epoch, views, workers, s.pool_prefetch, self.device.type == "cuda")
                self.fabric.print(f"unlabeled pool: read by {workers} DataLoader workers "
                                  f"(cache {s.pool_cache_mb / workers:.0f} MB each)")
            image, strong, scale, shift, eight_bit = loader.next()
        blocking = {"non_blocking": self.device.type == "cuda"}
        return UnlabeledBatch(image.to(self.device, **blocking), None, scale, shift, eight_bit,
                              strong=None if strong is None else strong.to(self.device, **blocking))

    def training_step(self, iteration: int) -> dict[str, torch.Tensor]:
        bs = self.cfg.train.batch_size
        for net in self.extra_networks.values():
            net.train()
        self.method.train()
        labeled = self.sample_batch(self.labeled_bank, bs, self.cfg.data.augment)
        unlabeled = None
        if self.method.uses_unlabeled:
            unlabeled = self.sample_unlabeled(self.cfg.ssl.unlabeled_batch_size or 2 * bs)
        losses = self.method.step(self.networks(), labeled, unlabeled, iteration).loss_dict()
        for k in INTERVAL_LOGS:
            if k in losses:
                self._interval.setdefault(k, []).append(float(losses[k]))
        return losses

    def validate(self, model: nn.Module) -> dict[str, float]:
        segmenter = Segmenter(model, self.spec, self.device)
        k = len(self.classes) - 1
        scorer = self._val_scorer()
        # per class: Dice sums, then (guided runs) |g's predicted Dice - true Dice| sums; then the case count
        sums = torch.zeros(2 * k + 1, dtype=torch.float64)
        pred_true: list[tuple[float, float]] = []
        for case in self.val_cases:
            mask = segmenter.predict(case)
            dice = foreground_dice(mask, case.label, len(self.classes))
            sums[:k] += torch.from_numpy(dice)
            if scorer is not None:  # does g judge this student's predictions correctly? (logged, never selects)
                predicted = scorer.score(case, mask)
                sums[k:2 * k] += torch.from_numpy(np.abs(predicted - dice))
                pred_true += list(zip(predicted.tolist(), dice.tolist()))
            sums[2 * k] += 1
        sums = self.fabric.all_reduce(sums.to(self.device), reduce_op="sum").cpu()
        n = sums[2 * k].clamp_min(1)
        # why: no validation case is no score, never a Dice of 0 to select on
        per_class = (sums[:k] / n).tolist() if sums[2 * k] > 0 else [float("nan")] * k
        metrics = {"val/dice": float(np.mean(per_class))}
        if k > 1:
            metrics.update({f"val/dice_{name}": v for name, v in zip(self.classes[1:], per_class)})
        if scorer is not None:
            metrics["guidance/g_mae_val"] = float((sums[k:2 * k] / n).mean())
            if self.fabric.world_size == 1 and len(pred_true) > 2:
                from scipy.stats import spearmanr

                p, t = np.array(pred_true).T
                if p.std() > 0 and t.std() > 0:
                    metrics["guidance/g_spearman_val"] = float(spearmanr(p, t)[0])
        if scorer is not None and self.probe_cases:
            metrics.update({f"guidance/{k}": v for k, v in self.probe_pseudolabels(scorer).items()})
        # guidance statistics of the interval since the last validation (mean q, share kept, lambdas)
        metrics.update({f"{'ssl' if name == 'lambda' else 'guidance'}/{name}": float(np.mean(v))
                        for name, v in self._interval.items() if v})
        self._interval = {}
        return metrics
