"""Lightning Fabric set-up shared by every trainer and command."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning_fabric import Fabric
from lightning_fabric.loggers import Logger
from lightning_fabric.strategies import DDPStrategy
from lightning_fabric.utilities.rank_zero import rank_zero_only

from ..config import RuntimeConfig


class AppendingCSVLogger(Logger):
    """``<root_dir>/<name>/metrics.csv``, one row per logged step, written as it is logged.

    Replaces Lightning's CSVLogger, which buffers rows (a killed run loses them) and deletes the
    file when a resumed run logs again. Here every row is appended and flushed at once; a metric
    not seen before rewrites the file with the wider header (rare: the first train and validation
    logs). :meth:`truncate_after` drops rows a resumed run is about to redo.
    """

    def __init__(self, root_dir: str | Path, name: str = "csv") -> None:
        self._root = Path(root_dir)
        self._name = name
        self._header: list[str] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def root_dir(self) -> str:
        return str(self._root)

    @property
    def log_dir(self) -> str:
        return str(self._root / self._name)

    @property
    def path(self) -> Path:
        return self._root / self._name / "metrics.csv"

    def _rows(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.is_file():
            return [], []
        with open(self.path, newline="") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(reader)

    def _rewrite(self, header: list[str], rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.part")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)  # why: a kill mid-rewrite must not leave half the old rows
        self._header = header

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **metrics}
        if self._header is None:
            self._header = self._rows()[0]
        if not self._header or any(k not in self._header for k in row):
            header, rows = self._rows()
            header = (header or ["step"]) + [k for k in row if k not in header and k != "step"]
            self._rewrite(header, [*rows, row])
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._header, restval="").writerow(row)

    @rank_zero_only
    def truncate_after(self, step: int) -> None:
        """Keep only rows logged at ``step`` or before (0: none): a resumed run redoes the rest."""
        header, rows = self._rows()
        if header:
            self._rewrite(header, [r for r in rows if float(r.get("step") or 0) <= step])

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are in the run's config.yaml."""


def make_loggers(log_dir: Path) -> list[Logger]:
    """The run's loggers in ``log_dir``: CSV (:class:`AppendingCSVLogger`) and TensorBoard; both write on
    rank 0 only."""
    from lightning_fabric.loggers import TensorBoardLogger

    return [AppendingCSVLogger(log_dir, name="csv"),
            TensorBoardLogger(root_dir=str(log_dir), name="tensorboard", version="")]


def make_fabric(runtime: RuntimeConfig, log_dir: Path | None = None) -> Fabric:
    """Create and launch a Fabric for ``runtime`` with CSV (:class:`AppendingCSVLogger`) + TensorBoard
    loggers in ``log_dir``.

    Works unchanged for one CPU, one GPU, and DDP started by ``torchrun`` or by Fabric's
    own launcher (``runtime.devices > 1``).
    """
    loggers = make_loggers(log_dir) if log_dir is not None else []
    fabric = Fabric(accelerator=runtime.accelerator, devices=runtime.devices, strategy=runtime.strategy,
                    precision=runtime.precision, num_nodes=runtime.num_nodes, loggers=loggers)
    if isinstance(fabric.strategy, DDPStrategy):
        # why: BaseTrainer._sync_buffers gives every rank rank 0's buffers once per step; DDP's own
        # broadcast before every forward (an SSL step makes several) would only add collectives.
        fabric.strategy._ddp_kwargs.setdefault("broadcast_buffers", False)

    try:
        fabric.launch()
    except RuntimeError as exc:  # launched through `fabric run`: processes already exist
        if "launched through the CLI" not in str(exc):
            raise
    return fabric
