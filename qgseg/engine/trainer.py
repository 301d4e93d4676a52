"""The training loop, written once.

:class:`BaseTrainer` owns everything a run needs regardless of *what* is trained:
Fabric (devices, precision, DDP), optimiser and schedule, iteration-based training,
validation every N iterations with best-checkpoint selection on the validation split,
early stopping, EMA weights, seeding, progress bars, CSV + TensorBoard logs and atomic,
resumable checkpoints. Subclasses (segmentation, quality predictor, SSL) override a few
small methods, nnU-Net style:

* :meth:`build_model` - the network;
* optionally :meth:`build_extra_networks` - further networks trained with it (one optimiser, each set
  up by Fabric: device, precision, DDP) and :meth:`after_optimizer_step` (EMA teachers);
* :meth:`setup_data` - load what :meth:`training_step` samples from;
* :meth:`training_step` - draw a batch and return a dict of losses with key ``"loss"``;
* :meth:`validate` - return a dict of validation metrics incl. :attr:`monitor`;
* optionally :meth:`build_optimizer`, :meth:`extra_state` / :meth:`load_extra_state`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import RunConfig, save_config, to_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA
from .fabric import make_fabric
from .optim import build_optimizer, build_scheduler
from .run_dir import resume_config_changes


class Interrupted(RuntimeError):
    """Raised by ``fit(stop_after=...)`` to simulate a killed run (tests, debugging)."""


@dataclass
class FitResult:
    best_metric: float | None
    best_iteration: int | None
    iterations_done: int
    stopped_early: bool
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_path: Path | None = None
    last_path: Path | None = None
    selection: str = "best"  # how best.ckpt was chosen, as reported in train_history.json and results


class BaseTrainer:
    """Iteration-based trainer; see the module docstring for what subclasses override."""

    monitor: str = "val/dice"
    monitor_mode: str = "max"  # "max" or "min"
    #: config keys :meth:`setup` computes from others (compared on resume through those others)
    derived_config_keys: tuple[str, ...] = ()

    def __init__(self, cfg: RunConfig, run_dir: str | Path, fabric=None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.fabric = fabric or make_fabric(cfg.runtime, log_dir=self.run_dir / "logs")
        self.iterations = cfg.train.iterations
        self.val_every = cfg.train.val_every
        self.checkpoint_every = cfg.train.checkpoint_every or cfg.train.val_every
        # One generator for batch sampling and augmentation: its state goes into the
        # checkpoint, which is what makes resume bit-exact. Offset by rank for DDP.
        self.gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + self.fabric.global_rank)
        self.model: nn.Module | None = None
        self.extra_networks: dict[str, nn.Module] = {}
        self.ema: EMA | None = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ to override
    def setup_data(self) -> None:
        """Load training/validation data; called once before the model is built."""

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_extra_networks(self) -> dict[str, nn.Module]:
        """Networks trained together with :meth:`build_model`'s (e.g. the second network of CPS)."""
        return {}

    def after_optimizer_step(self, iteration: int) -> None:
        """Called after every optimiser step (and after the trainer's own EMA update)."""

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        t = self.cfg.train
        return build_optimizer(t.optimizer, model.parameters(), t.lr, t.weight_decay, t.momentum)

    def training_step(self, iteration: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def has_validation(self) -> bool:
        """False when there are no validation cases: then :meth:`validate` is never called (only
        allowed with ``train.select: last``; subclasses refuse it otherwise in :meth:`setup_data`)."""
        return True

    def checkpoint_meta(self) -> dict[str, Any]:
        """Everything needed to use the model later (classes, channels, preprocessing)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def is_main(self) -> bool:
        return self.fabric.global_rank == 0

    @property
    def eval_model(self) -> nn.Module:
        """The weights used for validation and saved as "best": EMA when enabled. The plain module, not
        the DDP wrapper: ranks validate different cases, and DDP's forward could start a collective
        (buffer broadcast) on one rank only."""
        return self.ema.module if self.ema is not None else self._raw_model()

    def _better(self, value: float, best: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if best is None:
            return True
        return value > best if self.monitor_mode == "max" else value < best

    def _raw_model(self) -> nn.Module:
        return getattr(self.model, "module", self.model)

    def raw_extra_networks(self) -> dict[str, nn.Module]:
        return {k: getattr(m, "module", m) for k, m in self.extra_networks.items()}

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics) of the trained networks.

        DDP keeps parameters equal but each rank's forward updates its buffers from its own batch;
        without this, EMA teachers and the validated weights would differ between ranks, and the
        checkpoint (rank 0's) would not be what rank 1 validated. One broadcast per dtype, per step;
        :func:`make_fabric` turns DDP's own per-forward buffer broadcast off, which this replaces.
        """
        if self.fabric.world_size == 1:
            return
        import torch.distributed as dist

        nets = [self._raw_model(), *self.raw_extra_networks().values()]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buf in (b for net in nets for b in net.buffers()):
            by_dtype.setdefault(buf.dtype, []).append(buf)
        for bufs in by_dtype.values():
            flat = torch.cat([b.detach().reshape(-1) for b in bufs])
            dist.broadcast(flat, src=0)
            for b, v in zip(bufs, flat.split([b.numel() for b in bufs])):
                b.data.copy_(v.view_as(b))

    def _state(self, iteration: int, best: float | None, best_it: int | None, bad: int) -> dict[str, Any]:
        state = {
            "model": self._raw_model().state_dict(),
            "extra_networks": {k: m.state_dict() for k, m in self.raw_extra_networks().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": iteration,
            "best_metric": best,
            "best_iteration": best_it,
            "bad_validations": bad,
            "history": self.history,
            **self._rng_state(),
            "config": to_dict(self.cfg),
            "meta": self.checkpoint_meta(),
            "extra": self.extra_state(),
        }
        if self.fabric.world_size > 1:
            # why: each rank draws its own batches; resuming every rank with rank 0's streams would not
            # continue the run that was killed (called on every rank: it is a collective)
            import torch.distributed as dist

            per_rank: list[Any] = [None] * self.fabric.world_size
            dist.all_gather_object(per_rank, self._rng_state())
            state["rank_rng"] = per_rank
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_weights(self, state: dict[str, Any]) -> None:
        """Every network of a ``last.ckpt`` state (model, extra networks, EMA, :meth:`load_extra_state`,
        e.g. teachers), without the optimiser, schedule or random streams: what resuming and an analysis of
        a finished run (``benchmarks/study_probe_hidden.py``) both need, after :meth:`setup`."""
        self._raw_model().load_state_dict(state["model"])
        for k, m in self.raw_extra_networks().items():
            m.load_state_dict(state["extra_networks"][k])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.load_extra_state(state.get("extra", {}))

    def _rng_state(self) -> dict[str, Any]:
        """This process's random streams: the trainer's generator, torch's, CUDA's."""
        state = {"generator": self.gen.get_state(), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _load_rng_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_rng_state`: this rank's own entry of a multi-process checkpoint."""
        per_rank = state.get("rank_rng") or []
        if len(per_rank) == self.fabric.world_size:
            state = per_rank[self.fabric.global_rank]
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _best_state(self, iteration: int, metric: float | None) -> dict[str, Any]:
        """What ``best.ckpt`` holds: the validated (EMA) weights and what is needed to use them."""
        return {"model": self.eval_model.state_dict(), "iteration": iteration, "best_metric": metric,
                "config": to_dict(self.cfg), "meta": self.checkpoint_meta()}

    def _save(self, name: str, state: dict[str, Any]) -> Path:
        path = self.run_dir / "checkpoints" / name
        if self.is_main:
            save_checkpoint(state, path)
        self.fabric.barrier()
        return path

    def _write(self, bar: tqdm, text: str) -> None:
        if self.is_main:
            bar.write(text)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.fabric.log_dict({k: float(v) for k, v in metrics.items()}, step=step)

    # ------------------------------------------------------------------ the loop
    def setup(self) -> None:
        self.fabric.seed_everything(self.cfg.train.seed + self.fabric.global_rank, verbose=False)
        if self.cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.setup_data()
        model = self.build_model()
        extra = self.build_extra_networks()
        # one optimiser over every trained network; each network is set up (device, precision, DDP) on its own
        optimizer = self.build_optimizer(nn.ModuleList([model, *extra.values()]) if extra else model)
        self.scheduler = build_scheduler(optimizer, self.cfg.train.schedule, self.iterations, self.cfg.train.warmup)
        if extra:
            self.model = self.fabric.setup_module(model)
            self.extra_networks = {k: self.fabric.setup_module(m) for k, m in extra.items()}
            self.optimizer = self.fabric.setup_optimizers(optimizer)
        else:
            self.model, self.optimizer = self.fabric.setup(model, optimizer)
        if self.cfg.train.ema:
            self.ema = EMA(self._raw_model(), self.cfg.train.ema)
        if self.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")

    def fit(self, resume: bool = False, stop_after: int | None = None) -> FitResult:
        """Train for ``cfg.train.iterations`` iterations, resuming from ``last.ckpt`` if asked."""
        start_time = time.time()
        last_path = self.run_dir / "checkpoints" / "last.ckpt"
        state = None
        if resume and last_path.is_file():
            state = load_checkpoint(last_path, map_location="cpu")
            # why before setup(): it rewrites config.yaml, which must still describe the run if refused
            for change in resume_config_changes(state.get("config") or {}, to_dict(self.cfg), last_path,
                                                ignore=self.derived_config_keys):
                self.fabric.print(f"resuming with a changed setting: {change}")
        if self.model is None:
            self.setup()
        start, best, best_it, bad = 0, None, None, 0
        if state is not None:
            self.load_weights(state)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self._load_rng_state(state)
            start, best, best_it = state["iteration"], state["best_metric"], state["best_iteration"]
            bad, self.history = state["bad_validations"], list(state["history"])
            self.fabric.print(f"resumed from {last_path} at iteration {start}")
        elif resume:
            self.fabric.print(f"nothing to resume in {last_path.parent}; starting from scratch")
        for logger in self.fabric.loggers:
            if hasattr(logger, "truncate_after"):  # rows after the checkpoint are redone (all of them, afresh)
                logger.truncate_after(start)

        patience = self.cfg.train.early_stop_patience
        # train.select: last keeps the last model as best.ckpt (validation, if any, is only logged)
        select_last = self.cfg.train.select == "last"
        validates = self.has_validation()
        selection = f"best {self.monitor}" if not select_last else "last" if validates else "last (no validation)"
        # why: resuming a run that had stopped early must not train on past its stopping point
        stopped_early = resume and start > 0 and patience is not None and bad >= patience
        if stopped_early:
            self.fabric.print(f"the run had stopped early at iteration {start}; nothing left to train")
        bar = tqdm(total=self.iterations, initial=start, desc=f"train {self.cfg.name}", dynamic_ncols=True,
                   disable=not (self.is_main and self.cfg.runtime.progress))
        it = start
        running: dict[str, float] = {}
        last_it = start if stopped_early else self.iterations
        for it in range(start + 1, last_it + 1):
            self.model.train()
            losses = self.training_step(it)
            self.optimizer.zero_grad(set_to_none=True)
            self.fabric.backward(losses["loss"])
            self.optimizer.step()
            self.scheduler.step()
            self._sync_buffers()
            if self.ema is not None:
                self.ema.update(self._raw_model())
            self.after_optimizer_step(it)
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            running["_n"] = running.get("_n", 0) + 1
            bar.update(1)
            if it % 10 == 0 or it == self.iterations:
                n = running.pop("_n")
                logs = {f"train/{k}": v / n for k, v in running.items()}
                logs["train/lr"] = self.optimizer.param_groups[0]["lr"]
                self.log(logs, it)
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                running = {}
            if (it % self.val_every == 0 or it == self.iterations) and validates:
                self.eval_model.eval()
                with torch.no_grad(), self.fabric.autocast():  # why: the precision the wrapper gave training
                    metrics = self.validate(self.eval_model)
                value = metrics.get(self.monitor)
                self.history.append({"iteration": it, **metrics})
                self.log(metrics, it)
                if select_last:
                    best = value  # why: nothing is selected; report the validation of the model that is kept
                elif self._better(value, best):
                    best, best_it, bad = value, it, 0
                    self._save("best.ckpt", self._best_state(it, best))
                elif it > self.cfg.train.early_stop_start * self.iterations:
                    bad += 1  # why: with a decaying schedule the early, high-LR validations are noise
                line = f"[{it}/{self.iterations}] " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                if best is not None and not select_last:
                    line += f"  (best {self.monitor}={best:.4f} @ {best_it})"
                self._write(bar, line)
                if patience is not None and bad >= patience:
                    stopped_early = True
            if it % self.checkpoint_every == 0 or it == self.iterations or stopped_early:
                if select_last:  # why: without selection best.ckpt is always the latest model
                    best_it = it
                    self._save("best.ckpt", self._best_state(it, best))
                self._save("last.ckpt", self._state(it, best, best_it, bad))
            if stopped_early:
                self._write(bar, f"early stop at iteration {it}: no improvement of {self.monitor} "
                          f"in {self.cfg.train.early_stop_patience} validations")
                break
            if stop_after is not None and it >= stop_after:
                bar.close()
                raise Interrupted(f"stopped after iteration {it} (simulated kill)")
        bar.close()
        result = FitResult(best, best_it, it, stopped_early, time.time() - start_time, self.history,
                           self.run_dir / "checkpoints" / "best.ckpt", last_path, selection)
        if self.is_main:
            with open(self.run_dir / "train_history.json", "w") as fh:
                json.dump({"best_metric": best, "best_iteration": best_it, "monitor": self.monitor,
                           "selection": selection, "iterations_done": it, "stopped_early": stopped_early,
                           "history": self.history}, fh, indent=2)
        for logger in self.fabric.loggers:
            logger.finalize("success")
        return result
