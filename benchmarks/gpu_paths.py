"""The GPU paths, end to end on CUDA with bf16 mixed precision: segmenter training, quality-predictor
training, a guided MT-QW run, evaluation and prediction; each step's wall time and result go to
``benchmarks/results/gpu_paths.json`` (+ ``.md``). Under 10 minutes on one GPU at the default sizes.

    python benchmarks/gpu_paths.py                      # needs CUDA; bf16-mixed (16-mixed where bf16 is missing)
    python benchmarks/gpu_paths.py --devices 2          # the training steps as 2-GPU DDP
    python benchmarks/gpu_paths.py --cpu-smoke          # the same commands on CPU, tiny, no result file

Every step is the real CLI (``qgseg train / quality train / run / evaluate / predict``) in a subprocess,
so what is measured is what a user runs. Each run's ``config.yaml`` is read back to record the
accelerator and precision it actually used. Without CUDA the script says so and exits 2 without a
result file (the CPU test suite only constructs the mixed-precision configuration:
tests/test_ddp.py::test_mixed_precision_constructs_on_cpu).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result


def _qgseg(args: list[str], log: Path, env: dict[str, str]) -> float:
    """Run ``qgseg ARGS``; its output goes to ``log``. Returns the wall time; exits with the log's tail on failure."""
    start = time.time()
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "qgseg.cli.main", *args], check=False, stdout=fh,
                            stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    wall = time.time() - start
    if rc != 0:
        sys.exit(f"step failed (exit {rc}): qgseg {' '.join(args)}\n--- last lines of {log}:\n"
                 + "\n".join(log.read_text().splitlines()[-30:]))
    return wall


def _sets(pairs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in pairs.items():
        out += ["--set", f"{k}={v}"]
    return out


def _runtime_used(run_dir: Path) -> dict[str, Any]:
    """accelerator / precision / devices from the run's config.yaml (what the run really used)."""
    import yaml

    rt = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("runtime", {})
    return {k: rt.get(k) for k in ("accelerator", "precision", "devices", "strategy")}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _test_dice(result: dict[str, Any]) -> float | None:
    """Mean foreground test Dice of a run's ``result.json``."""
    return (((result.get("test") or {}).get("mean_foreground") or {}).get("dice") or {}).get("mean")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_paths", help="run folders (replaced)")
    ap.add_argument("--iterations", type=int, default=600, help="segmenter / MT-QW iterations")
    ap.add_argument("--quality-epochs", type=int, default=10)
    ap.add_argument("--devices", type=int, default=1, help="GPUs per training step (>1: DDP)")
    ap.add_argument("--precision", default=None, help="default: bf16-mixed, or 16-mixed on GPUs without bf16")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="check the script itself on CPU: tiny sizes, 32-true, no result file")
    a = ap.parse_args()

    import torch

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if a.cpu_smoke:
        accelerator, device, precision = "cpu", "cpu", a.precision or "32-true"
        a.iterations, a.quality_epochs = min(a.iterations, 4), 1
        env.setdefault("OMP_NUM_THREADS", "1")
        gpu = "none (--cpu-smoke)"
    elif not torch.cuda.is_available():
        print("gpu_paths: no CUDA device visible (torch.cuda.is_available() is False); nothing measured, no result "
              "file written. Without a GPU these paths are covered for construction only "
              "(tests/test_ddp.py::test_mixed_precision_constructs_on_cpu); --cpu-smoke checks this script on CPU.")
        sys.exit(2)
    else:
        accelerator, device = "gpu", "cuda"
        precision = a.precision or ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
        gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, " \
              f"CUDA {torch.version.cuda}"
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    logs = a.out / "logs"
    logs.mkdir()
    runtime = {"runtime.accelerator": accelerator, "runtime.devices": a.devices, "runtime.precision": precision,
               "runtime.progress": "false", **({"runtime.strategy": "ddp"} if a.devices > 1 else {})}
    small = {"quality.masks_per_image": 2, "quality.weak_epochs": "[1]", "data.image_size": "[32,32]",
             "quality.image_size": "[32,32]", "model.features": "[8,16,32,64]", "quality.width": "[4,8,8,16]",
             "quality.depth": 10} if a.cpu_smoke else {}
    common = ["--output-dir", str(a.out), *_sets(runtime)]
    steps: dict[str, dict[str, Any]] = {}
    t_all = time.time()

    # (a) segmenter, supervised
    seg = a.out / "segmenter"
    wall = _qgseg(["train", "demo", "--name", "segmenter", *common,
                   *_sets({"train.iterations": a.iterations, "train.val_every": max(1, a.iterations // 4), **small})],
                  logs / "segmenter.log", env)
    r = _json(seg / "eval" / "result.json")
    steps["segmenter_train"] = {"wall_s": wall, **_runtime_used(seg), "iterations": a.iterations,
                                "best_val_dice": r.get("best_val_dice"), "test_dice": _test_dice(r)}
    # (b) quality predictor (phase 1 of the guided run)
    qdir = a.out / "quality"
    wall = _qgseg(["quality", "train", "quality_demo", "--name", "quality", *common,
                   *_sets({"quality.epochs": a.quality_epochs, **small})], logs / "quality.log", env)
    steps["quality_train"] = {"wall_s": wall, **_runtime_used(qdir), "epochs": a.quality_epochs,
                              "synthetic_test": {k: v for k, v in ((_json(qdir / "eval" / "quality_eval.json")
                                                                    .get("synthetic") or {}).get("all") or {}).items()
                                                 if k in ("n", "mae", "pearson", "spearman")}}
    # (c) guided MT-QW with that predictor (leak-checked by `qgseg run`)
    guided = a.out / "mt-qw"
    wall = _qgseg(["run", "demo", "--variant", "mt-qw", "--predictor", str(qdir), "--name", "mt-qw", *common,
                   *_sets({"train.iterations": a.iterations, "train.val_every": max(1, a.iterations // 4), **small})],
                  logs / "mt-qw.log", env)
    r = _json(guided / "result.json")
    steps["guided_mt_qw"] = {"wall_s": wall, **_runtime_used(guided / "segmenter"), "iterations": a.iterations,
                             "best_val_dice": r.get("best_val_dice"), "test_dice": _test_dice(r)}
    # (d) evaluate and predict with the segmenter of (a), on the device
    best = seg / "checkpoints" / "best.ckpt"
    data = a.out / "_demo_data"
    wall = _qgseg(["evaluate", "--checkpoint", str(best), str(data), "--output", str(a.out / "evaluate"),
                   "--device", device], logs / "evaluate.log", env)
    steps["evaluate"] = {"wall_s": wall, "device": device}
    wall = _qgseg(["predict", "--checkpoint", str(best), "--input", str(data / "images"),
                   "--output", str(a.out / "predict"), "--device", device], logs / "predict.log", env)
    steps["predict"] = {"wall_s": wall, "device": device,
                        "images": len(list((data / "images").iterdir()))}

    total = time.time() - t_all
    for name, s in steps.items():
        print(f"{name:16s} {s['wall_s']:7.1f} s  " + "  ".join(f"{k}={v}" for k, v in s.items() if k != "wall_s"))
    print(f"total {total:.1f} s on {gpu}; logs in {logs}")
    if a.cpu_smoke:
        print("--cpu-smoke: no result file written")
        return
    result = {"gpu": gpu, "precision": precision, "devices": a.devices, "total_wall_s": total, "steps": steps,
              "protocol": f"built-in demo data; qgseg CLI per step on {accelerator} ({precision}); segmenter and "
                          f"MT-QW {a.iterations} iterations, predictor {a.quality_epochs} epochs; evaluate/predict "
                          f"fp32 on {device}"}
    rows = [(f"{k} wall s", f"{v['wall_s']:.1f}") for k, v in steps.items()] + [("total wall s", f"{total:.1f}")]
    print(write_result("gpu_paths", result, rows, "GPU paths (CUDA + mixed precision)"))


if __name__ == "__main__":
    main()
