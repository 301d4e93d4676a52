"""Runs several short trainings in one 2-process DDP group (started by Fabric), for tests/test_ddp.py.

Usage: ``python tests/ddp_driver.py SPEC.json``. The spec holds ``base`` (config overrides shared by
every run, incl. ``runtime.devices=2``), ``out`` (folder of the run folders and of ``result.json``)
and ``runs``: ``{"name", "set": [overrides], "stop_after": int | null, "resume": bool}``. One group
for many runs because starting the processes costs more than a 2-iteration run.

Each rank gathers, per run, every trained network's weights and the method's state (EMA teachers)
from all ranks, so rank 0 can record whether the ranks hold identical copies (they must under DDP).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from qgseg.config import load_config
from qgseg.engine import Interrupted
from qgseg.engine.fabric import make_fabric, make_loggers
from qgseg.engine.segmentation import SegmentationTrainer


def _flat(tensors) -> torch.Tensor:
    parts = [t.detach().double().flatten().cpu() for t in tensors if t.dtype.is_floating_point]
    return torch.cat(parts) if parts else torch.zeros(1, dtype=torch.float64)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    fabric = make_fabric(load_config(None, spec["base"]).runtime)
    results = {}
    for run in spec["runs"]:
        cfg = load_config(None, spec["base"] + run["set"])
        run_dir = out / run["name"]
        fabric._loggers = make_loggers(run_dir / "logs")  # why: one process group, each run its own log folder
        trainer = SegmentationTrainer(cfg, run_dir, fabric=fabric)
        try:
            fit = trainer.fit(resume=run.get("resume", False), stop_after=run.get("stop_after"))
            done, interrupted = fit.iterations_done, False
        except Interrupted:
            done, interrupted = run["stop_after"], True
        same = {}
        for name, part in [*trainer.raw_networks().items(), ("method", trainer.method)]:
            mine = _flat(part.state_dict().values()).to(fabric.device)
            every = fabric.all_gather(mine)
            same[name] = bool(all(torch.equal(every[0], every[r]) for r in range(1, fabric.world_size)))
        cases = fabric.all_gather(torch.tensor([len(trainer.val_cases)], device=fabric.device)).flatten().tolist()
        ddp = trainer.model._forward_module  # the DistributedDataParallel wrapper Fabric made
        results[run["name"]] = {"iterations": done, "interrupted": interrupted, "same_on_every_rank": same,
                                "ddp_broadcasts_buffers": bool(ddp.broadcast_buffers),
                                "val_cases_per_rank": cases, "method": trainer.method.name,
                                "history": trainer.history}
    if fabric.global_rank == 0:
        (out / "result.json").write_text(json.dumps({"world_size": fabric.world_size, "runs": results}))


if __name__ == "__main__":
    main(sys.argv[1])
