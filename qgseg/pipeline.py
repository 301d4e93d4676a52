"""End-to-end workflows shared by the CLI commands (train -> evaluate -> report)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import RunConfig
from .data.run_data import RunData, prepare_run_data
from .engine.checkpoint import load_checkpoint
from .engine.segmentation import SegmentationTrainer
from .evaluation.evaluate import evaluate_segmenter
from .evaluation.inference import ModelSpec, Segmenter


def default_run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def load_segmenter(path: Path, device: Any = "cpu", cfg: RunConfig | None = None) -> Segmenter:
    kwargs = {}
    if cfg is not None:
        kwargs = {"sw_batch_size": cfg.eval.sw_batch_size, "sw_overlap": cfg.eval.sw_overlap}
    return Segmenter.from_checkpoint(path, device=device, **kwargs)


def train_and_evaluate(cfg: RunConfig, run_dir: Path | None = None, resume: bool = False,
                       data: RunData | None = None, method=None, evaluate: bool = True) -> dict[str, Any]:
    """Train ``cfg`` (supervised unless ``method`` is given), select the best checkpoint on the
    validation split, then evaluate it once on the test split. Writes everything under ``run_dir``."""
    from .viz.plots import plot_training_curves

    run_dir = Path(run_dir or default_run_dir(cfg))
    start = time.time()
    data = data or prepare_run_data(cfg.data, cfg.output_dir)
    trainer = SegmentationTrainer(cfg, run_dir, method=method, data=data)
    fit = trainer.fit(resume=resume)
    result: dict[str, Any] = {"run_dir": str(run_dir), "best_val_dice": fit.best_metric,
                              "best_iteration": fit.best_iteration, "train_wall_s": fit.wall_s}
    if not trainer.is_main or not evaluate:
        return result
    log_csv = run_dir / "logs" / "csv" / "metrics.csv"
    if log_csv.is_file():
        result["curves"] = str(plot_training_curves(log_csv, run_dir / "plots" / "training_curves.png", cfg.name))
    segmenter = load_segmenter(fit.best_path, trainer.device, cfg)
    ds = data.dataset
    ev = evaluate_segmenter(segmenter, (ds.load(i) for i in data.test), out_dir=run_dir / "eval",
                            overlays=cfg.eval.overlays, prefix="test", progress=cfg.runtime.progress,
                            total=len(data.test))
    result.update({"test": ev["summary"], "table": ev["table"], "wall_s": time.time() - start})
    with open(run_dir / "eval" / "result.json", "w") as fh:
        json.dump({k: v for k, v in result.items() if k != "table"}, fh, indent=2)
    return result


def checkpoint_spec(path: Path) -> ModelSpec:
    return ModelSpec.from_dict(load_checkpoint(path)["meta"]["spec"])


def run_demo(cfg: RunConfig, resume: bool = False) -> dict[str, Any]:
    """``qgseg demo``: generate the demo data, train, select on validation, evaluate on test,
    and print a summary table of what was done and where it was written."""
    run_dir = default_run_dir(cfg)
    start = time.time()
    result = train_and_evaluate(cfg, run_dir, resume=resume)
    wall = time.time() - start
    fg = result["test"]["mean_foreground"]
    rows = [
        ("data", f"demo ({cfg.data.dataset}), image size {cfg.data.image_size}"),
        ("model", f"{cfg.model.name} features {cfg.model.features}"),
        ("training", f"{cfg.train.iterations} iterations, best val Dice {result['best_val_dice']:.3f} "
                     f"@ {result['best_iteration']}"),
        ("test Dice", f"{fg['dice']['mean']:.3f} ± {fg['dice']['std']:.3f}"),
        ("test HD95", f"{fg['hd95']['mean']:.2f} ± {fg['hd95']['std']:.2f} {result['test']['unit']}"),
        ("wall time", f"{wall:.0f} s"),
        ("run folder", str(run_dir)),
    ]
    print()
    print(result["table"])
    print()
    width = max(len(k) for k, _ in rows)
    print("qgseg demo summary")
    print("-" * 60)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print("-" * 60)
    print(f"see {run_dir}/config.yaml, checkpoints/, logs/ (CSV + TensorBoard), eval/, plots/")
    result["wall_s"] = wall
    return result
