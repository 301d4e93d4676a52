"""Issue 14, third axis: the quality predictor's backbone on PH2 (the ssl_ph2 protocol).

    OMP_NUM_THREADS=1 python benchmarks/study_backbones.py resnet10 resnet34 densenet121 efficientnet-b0 \\
        --existing resnet18=runs/bench/q_ssl_ph2:runs/bench/ssl_ph2_grid --seeds 0 --data-root ../shared/data

For each backbone: phase 1 (``qgseg quality train ssl_ph2`` with ``quality.backbone`` / ``quality.depth``;
non-ResNet backbones have no truth-map decoder, so they run as plain regressors at standard width),
its accuracy on the fixed PH2 test masks (``PH2/quality-test-masks.npz``) and on synthetic test
masks, then MT-QW and QAR trained with it (``qgseg compare ssl_ph2 --predictor ...``), test Dice
per seed. ``--existing NAME=QUALITY_RUN:GRID`` adds a backbone already trained (e.g. the default
ResNet-18 of the ssl_ph2 grid) without retraining. Runs go to ``--output-dir`` (resumable: a finished
predictor or run is reused). Writes ``benchmarks/results/study_backbones_ph2.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA_ROOT, qgseg_cli, write_result  # noqa: E402

RESNETS = {"resnet10": 10, "resnet18": 18, "resnet34": 34}
METHODS = ("mt-qw", "qar")


def backbone_overrides(name: str) -> list[str]:
    """Config overrides of phase 1 for one backbone name."""
    if name in RESNETS:
        return [f"quality.depth={RESNETS[name]}"]  # the preset's quarter width and truth-map decoder
    return [f"quality.backbone={name}", "quality.truth_map_weight=0", "quality.width=null"]


def collect(quality_run: Path, grid: Path, seeds: list[str]) -> dict:
    """Phase-1 accuracy and the guided runs' test Dice of one backbone, on ``seeds`` only (an existing
    grid may have more seeds than the new backbones)."""
    for need in (quality_run / "eval" / "quality_eval.json", grid / "comparison.json"):
        if not need.is_file():
            raise SystemExit(f"{need}: not found (run unfinished, or its folder is not in this checkout)")
    ev = json.loads((quality_run / "eval" / "quality_eval.json").read_text())
    fixed, syn = ev["ph2_fixed"]["all"], ev["synthetic"]["all"]
    hist = json.loads((quality_run / "train_history.json").read_text())
    methods = json.loads((grid / "comparison.json").read_text())["methods"]
    out = {"quality_run": str(quality_run), "grid": str(grid), "best_val_mae": hist.get("best_metric"),
           "fixed_mae": fixed["mae"], "fixed_spearman": fixed["spearman"], "fixed_auroc_0.7": fixed.get("auroc_0.7"),
           "synthetic_mae": syn["mae"], "synthetic_spearman": syn["spearman"]}
    for m in METHODS:
        r = methods.get(m)
        per_seed = {k: v for k, v in (r or {}).get("per_seed", {}).items() if k in seeds}
        out[m] = {"dice": float(np.mean(list(per_seed.values()))), "per_seed": per_seed} if per_seed else None
    return out


def plot(backbones: dict, path: Path) -> None:
    """Accuracy on the fixed PH2 test masks (MAE, Spearman) beside the Dice of MT-QW and QAR guided by each
    backbone: does a better judge make a better guide?"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(backbones)
    fig = Figure(figsize=(11, 3.4))
    FigureCanvasAgg(fig)
    panels = [("fixed-mask MAE (lower is better)", lambda r: r["fixed_mae"]),
              ("fixed-mask Spearman", lambda r: r["fixed_spearman"])]
    for k, (title, get) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 3, k)
        ax.bar(range(len(names)), [get(backbones[n]) for n in names], color="tab:grey")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(title, fontsize=9)
    ax = fig.add_subplot(1, 3, 3)
    for m, colour in (("mt-qw", "tab:blue"), ("qar", "tab:orange")):
        xs = [backbones[n]["fixed_mae"] for n in names if backbones[n].get(m)]
        ys = [backbones[n][m]["dice"] for n in names if backbones[n].get(m)]
        ax.scatter(xs, ys, color=colour, label=m)
        for x, y, n in zip(xs, ys, [n for n in names if backbones[n].get(m)]):
            ax.annotate(n, (x, y), fontsize=6)
    ax.set_xlabel("fixed-mask MAE")
    ax.set_ylabel("test Dice of the guided run")
    ax.legend(fontsize=7)
    fig.suptitle("PH2: predictor backbone -> accuracy and guided Dice", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbones", nargs="*", help="resnet10, resnet34, densenet121, efficientnet-b0, ...")
    parser.add_argument("--existing", action="append", default=[], help="NAME=QUALITY_RUN:GRID (already trained)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--output-dir", default="runs/bench/backbones")
    args = parser.parse_args()
    start = time.time()
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    seeds = [s.strip() for s in args.seeds.split(",")]
    for spec in args.existing:
        name, _, paths = spec.partition("=")
        q, _, g = paths.partition(":")
        results[name] = {**collect(Path(q), Path(g), seeds), "trained_here": False}
    for name in args.backbones:
        qdir, log = out_dir / f"q_{name}", out_dir / f"{name}.log"
        t0 = time.time()
        if not (qdir / "eval" / "quality_eval.json").is_file():
            resume = ["--resume"] if (qdir / "checkpoints" / "last.ckpt").is_file() else ["--overwrite"]
            qgseg_cli(["quality", "train", "ssl_ph2", "--data-root", args.data_root, "--output-dir", str(out_dir),
                  "--name", f"q_{name}", *resume, "--set", "runtime.progress=false",
                  *[x for o in backbone_overrides(name) for x in ("--set", o)]], log)
        q_wall = time.time() - t0
        qgseg_cli(["compare", "ssl_ph2", "--methods", ",".join(METHODS), "--seeds", args.seeds, "--jobs", "1",
              "--predictor", str(qdir / "checkpoints" / "best.ckpt"), "--data-root", args.data_root,
              "--output-dir", str(out_dir), "--name", f"grid_{name}"], log)
        results[name] = {**collect(qdir, out_dir / f"grid_{name}", seeds), "trained_here": True,
                         "overrides": backbone_overrides(name), "predictor_wall_s": q_wall}
        print(name, {k: v for k, v in results[name].items() if k in ("fixed_mae", "fixed_spearman", "mt-qw", "qar")},
              flush=True)

    def dice(r: dict | None) -> str:
        if not r:
            return "n/a"
        v = list(r["per_seed"].values())
        return f"{np.mean(v):.4f}" + (f" ± {np.std(v):.4f}" if len(v) > 1 else "") + f" ({len(v)} seed{'s' * (len(v) > 1)})"

    rows = [(name, f"fixed masks MAE {r['fixed_mae']:.4f} / Spearman {r['fixed_spearman']:.3f} / AUROC<0.7 "
                   f"{r['fixed_auroc_0.7']:.3f}; synthetic MAE {r['synthetic_mae']:.4f}; val MAE {r['best_val_mae']:.4f}; "
                   f"MT-QW Dice {dice(r['mt-qw'])}; QAR Dice {dice(r['qar'])}") for name, r in results.items()]
    rows.append(("wall s", f"{time.time() - start:.0f}"))
    out = {"backbones": results, "seeds": args.seeds, "wall_s": time.time() - start,
           "protocol": ("configs/ssl_ph2.yaml: phase 1 on the 140 labeled PH2 images at 96x96 (ResNets: the preset's "
                        "quarter width [16,32,64,128] + truth-map decoder, depth varied; DenseNet-121 / EfficientNet-B0: "
                        "MONAI, standard width, plain regression head), accuracy on the fixed PH2 test masks and 5 "
                        "synthetic masks per test image; then MT-QW and QAR (500 iterations, U-Net 16..128) guided by it, "
                        f"seeds {args.seeds}, test Dice; CPU, one thread per run")}
    path = write_result("study_backbones_ph2", out, rows, "Predictor backbones on PH2 (issue 14, third axis)",
                        draw=lambda path: plot(results, path))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
