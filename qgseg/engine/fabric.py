"""Lightning Fabric set-up shared by every trainer and command."""
from __future__ import annotations

from pathlib import Path

from lightning_fabric import Fabric

from ..config import RuntimeConfig


def make_fabric(runtime: RuntimeConfig, log_dir: Path | None = None) -> Fabric:
    """Create and launch a Fabric for ``runtime`` with CSV + TensorBoard loggers in ``log_dir``.

    Works unchanged for one CPU, one GPU, and DDP started by ``torchrun`` or by Fabric's
    own launcher (``runtime.devices > 1``).
    """
    loggers = []
    if log_dir is not None:
        from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

        loggers = [CSVLogger(root_dir=str(log_dir), name="csv", version=""),
                   TensorBoardLogger(root_dir=str(log_dir), name="tensorboard", version="")]
    accelerator = runtime.accelerator
    fabric = Fabric(accelerator=accelerator, devices=runtime.devices, strategy=runtime.strategy,
                    precision=runtime.precision, num_nodes=runtime.num_nodes, loggers=loggers)

    try:
        fabric.launch()
    except RuntimeError as exc:  # launched through `fabric run`: processes already exist
        if "launched through the CLI" not in str(exc):
            raise
    return fabric
