"""Seconds per training iteration of the segmentation presets, CPU defaults next to their GPU sizes.

    OMP_NUM_THREADS=1 python benchmarks/preset_speed.py [--steps 5]

Protocol: for each preset (``configs/<name>.yaml``) and each profile (``cpu``: the preset's
defaults; ``gpu``: the values of its ``# GPU:`` comments, :func:`qgseg.config.preset_gpu_overrides`), one full supervised training step
(forward, Dice+CE loss, backward, AdamW step) of the preset's network at its image size and
batch size on synthetic tensors (the cost does not depend on the data), one CPU thread
(``torch.set_num_threads(1)``); median of ``--steps`` steps after 2 warm-up steps.
``est_run_min``: that median x the profile's iterations (training only: no data loading or
validation), in minutes on one thread.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from qgseg.config import load_config, preset_gpu_overrides
from qgseg.models import build_model
from qgseg.ssl.base import build_supervised_loss

CHANNELS = {"ph2": 3, "cvc_colondb": 3, "acdc": 1}
CLASSES = {"ph2": 2, "cvc_colondb": 2, "acdc": 4}


def step_seconds(cfg, channels: int, classes: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg.model.name, 2, channels, classes, cfg.model.features).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = build_supervised_loss(cfg.train.loss)
    b, size = cfg.train.batch_size, cfg.data.image_size
    x, y = torch.randn(b, channels, *size), torch.randint(0, classes, (b, 1, *size))
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--presets", default="ph2,cvc_colondb,acdc")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    result: dict = {"presets": {}}
    rows = []
    for name in args.presets.split(","):
        for profile, overrides in (("cpu", []), ("gpu", preset_gpu_overrides(name))):
            cfg = load_config(name, overrides)
            s = step_seconds(cfg, CHANNELS[name], CLASSES[name], args.steps)
            entry = {"model": cfg.model.name, "features": cfg.model.features, "image_size": cfg.data.image_size,
                     "batch_size": cfg.train.batch_size, "iterations": cfg.train.iterations, "s_per_iteration": s,
                     "est_run_min": s * cfg.train.iterations / 60}
            result["presets"].setdefault(name, {})[profile] = entry
            rows.append(((f"{name} {profile}: {cfg.model.name} {cfg.data.image_size[0]} px, batch "
                         f"{cfg.train.batch_size}, {cfg.train.iterations} it"),
                         f"{s:.2f} s/it, ~{entry['est_run_min']:.0f} min on 1 thread"))
            print(rows[-1][0], "->", rows[-1][1], flush=True)
    result["protocol"] = __doc__.split("Protocol: ", 1)[1].replace("\n", " ").strip() + f" Steps: {args.steps}."
    result["wall_s"] = time.time() - start
    write_result("preset_speed", result, rows, "Training speed of the presets: CPU defaults and GPU sizes")


if __name__ == "__main__":
    main()
