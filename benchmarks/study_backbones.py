"""Issue 14, third axis: the quality predictor's backbone on PH2 (the ssl_ph2 protocol).

    OMP_NUM_THREADS=1 python benchmarks/study_backbones.py resnet10 resnet34 densenet121 efficientnet-b0 \\
        --existing resnet18=runs/bench/q_ssl_ph2:runs/bench/ssl_ph2_grid --seeds 0 --data-root ../shared/data

For each backbone: phase 1 (``qgseg quality train ssl_ph2`` with ``quality.backbone`` / ``quality.depth``;
non-ResNet backbones have no truth-map decoder, so they run as plain regressors at standard width),
its accuracy on the fixed PH2 test masks (``PH2/quality-test-masks.npz``) and on synthetic test
masks, then MT-QW and QAR trained with it (``qgseg compare ssl_ph2 --predictor ...``), test Dice
per seed. ``--existing NAME=QUALITY_RUN:GRID`` adds a backbone already trained (e.g. the default
ResNet-18 of the ssl_ph2 grid) without retraining. Runs go to ``--output-dir`` (resumable: a finished
predictor or run is reused). Writes ``benchmarks/results/study_backbones_ph2.{json,md,png}``.

In a checkout without the run folders (a fresh clone), the committed result fills in: its seeds and
backbones that have no run here are carried over and listed as such, so ``--seeds 1,2`` adds seeds
without dropping seed 0, and ``GRID`` may name a committed result instead of a folder
(``--existing resnet18=runs/bench/q_ssl_ph2:study_ph2``: the study grid's MT-QW and QAR, which the
default ResNet-18 guided). ``--report-only`` tabulates without training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_DATA_ROOT, carry_committed, committed_result, grid_rows, mean_std_text,  # noqa: E402
                    qgseg_cli, refresh_comparison, seed_row, write_result)

OUT_NAME = "study_backbones_ph2"
RESNETS = {"resnet10": 10, "resnet18": 18, "resnet34": 34}
METHODS = ("mt-qw", "qar")


def backbone_overrides(name: str) -> list[str]:
    """Config overrides of phase 1 for one backbone name."""
    if name in RESNETS:
        return [f"quality.depth={RESNETS[name]}"]  # the preset's quarter width and truth-map decoder
    return [f"quality.backbone={name}", "quality.truth_map_weight=0", "quality.width=null"]


ACCURACY = ("best_val_mae", "fixed_mae", "fixed_spearman", "fixed_auroc_0.7", "synthetic_mae", "synthetic_spearman")


def predictor_accuracy(quality_run: Path) -> dict | None:
    """A phase-1 run's accuracy (validation, fixed PH2 test masks, synthetic test masks); None without its eval."""
    if not (quality_run / "eval" / "quality_eval.json").is_file():
        return None
    ev = json.loads((quality_run / "eval" / "quality_eval.json").read_text())
    fixed, syn = ev["ph2_fixed"]["all"], ev["synthetic"]["all"]
    hist = json.loads((quality_run / "train_history.json").read_text())
    return {"best_val_mae": hist.get("best_metric"), "fixed_mae": fixed["mae"], "fixed_spearman": fixed["spearman"],
            "fixed_auroc_0.7": fixed.get("auroc_0.7"), "synthetic_mae": syn["mae"],
            "synthetic_spearman": syn["spearman"]}


def guided_per_seed(grid: Path, seeds: list[str] | None) -> tuple[dict[str, dict[str, Any]], bool]:
    """``({method: seed_row}, ran_here)`` of MT-QW and QAR on ``seeds`` (None: all): from a ``qgseg compare``
    grid here (each run's own wall when its comparison.json keeps them), or, when ``grid`` names a committed
    result instead (e.g. ``study_ph2``, whose grid guided by the default ResNet-18 is not in this checkout),
    from that file ({} when neither exists)."""
    if (grid / "comparison.json").is_file():
        return grid_rows(grid, list(METHODS), seeds), True
    if "/" in str(grid) or not (result := committed_result(str(grid))):
        return {}, False
    rows = {}
    for m in METHODS:
        r = (result.get("methods") or {}).get(m) or {}
        per_seed = {k: float(v) for k, v in (r.get("per_seed") or {}).items() if seeds is None or k in seeds}
        if per_seed:
            rows[m] = seed_row(per_seed, r.get("wall_s"))
    return rows, False


def collect(quality_run: Path, grid: Path, seeds: list[str] | None, committed: dict | None = None) -> dict:
    """Phase-1 accuracy and the guided runs' test Dice of one backbone, on ``seeds`` only (None: all; an
    existing grid may have more seeds than the new backbones).

    ``committed`` (this backbone's entry of the committed result) completes what has no run folder here,
    as ``carry_committed`` does for the other studies: its seeds of MT-QW and QAR, and its predictor's
    accuracy when no guided run was made here (the accuracy shown is that of the predictor that guided the
    runs). When runs made here join committed seeds judged by a predictor of other accuracy (a retrained
    one), that predictor's accuracy is kept under ``carried_predictor``."""
    committed = committed or {}
    found, ran_here = guided_per_seed(grid, seeds)
    here_acc = predictor_accuracy(quality_run)
    old_acc = {k: committed[k] for k in ACCURACY if k in committed}
    if here_acc is None and not old_acc:
        raise SystemExit(f"{quality_run / 'eval' / 'quality_eval.json'}: not found (run unfinished, or its folder is "
                         "not in this checkout) and no committed result for it")
    # the folders behind the numbers: here when runs were made here, else the committed ones
    out = {"quality_run": str(quality_run), "grid": str(grid)} if ran_here or "quality_run" not in committed else \
        {"quality_run": committed["quality_run"], "grid": committed.get("grid")}
    new = {m: (found.get(m) or {}).get("per_seed", {}) for m in METHODS}
    # seeds from a committed study result named as the grid were not recomputed here either: they carry too
    fresh = found if ran_here else {}
    old = {m: {"per_seed": {**((committed.get(m) or {}).get("per_seed") or {}), **({} if ran_here else new[m])},
               "wall_s": (committed.get(m) or {}).get("wall_s") if ran_here else (found.get(m) or {}).get("wall_s"),
               # the committed seeds' own walls: without them a seed of unknown wall would get the mean
               **({"wall_per_seed": (committed.get(m) or {}).get("wall_per_seed")} if ran_here else {})}
           for m in METHODS}
    rows, carried = carry_committed(fresh, old, seeds)
    fresh_seeds = bool(fresh)  # a seed tabulated here was run here (by the predictor in quality_run)
    for m in METHODS:
        per_seed = dict(sorted(rows[m]["per_seed"].items(), key=lambda kv: int(kv[0]))) if m in rows else {}
        walls = {"wall_per_seed": rows[m]["wall_per_seed"]} if rows.get(m, {}).get("wall_per_seed") else {}
        out[m] = {"dice": float(np.mean(list(per_seed.values()))), "per_seed": per_seed,
                  "wall_s": rows[m].get("wall_s"), **walls} if per_seed else None
    out.update(here_acc if fresh_seeds and here_acc else old_acc or here_acc)
    carried_seeds = sorted({s for v in carried.values() for s in v})
    if fresh_seeds and carried and old_acc and here_acc and abs(old_acc["fixed_mae"] - here_acc["fixed_mae"]) > 1e-9:
        out["carried_predictor"] = {**old_acc, "seeds": carried_seeds}
    elif (prior := committed.get("carried_predictor")) and (keep := [s for s in prior["seeds"] if s in carried_seeds]):
        out["carried_predictor"] = {**prior, "seeds": keep}  # a regenerated report keeps the earlier predictor named
    if carried:
        out["carried_over"] = carried
    return out


def carried_text(r: dict) -> str:
    """Which numbers of one backbone's row were carried from the committed result, not recomputed here."""
    carried = r["carried_over"]
    if isinstance(carried, str):
        return carried
    text = "; ".join(f"{m} seeds {', '.join(map(str, v))}" for m, v in carried.items())
    if r.get("carried_predictor"):
        text += (f" (judged by a predictor of fixed-mask MAE {r['carried_predictor']['fixed_mae']:.4f}, "
                 "the committed one; the accuracy shown is of the predictor here)")
    return text


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
    parser.add_argument("--report-only", action="store_true", help="tabulate what is here and committed; train nothing")
    parser.add_argument("--note", default=None, help="provenance to record (default: the committed result's note)")
    args = parser.parse_args()
    start = time.time()
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    committed_file = committed_result(OUT_NAME) or {}
    committed = committed_file.get("backbones") or {}
    results: dict[str, dict] = {}
    seeds = [s.strip() for s in args.seeds.split(",")]
    for spec in args.existing:
        name, _, paths = spec.partition("=")
        q, _, g = paths.partition(":")
        results[name] = {**collect(Path(q), Path(g), seeds, committed.get(name)), "trained_here": False}
    for name in args.backbones:
        qdir, log, grid = out_dir / f"q_{name}", out_dir / f"{name}.log", out_dir / f"grid_{name}"
        t0, trained = time.time(), False
        if not args.report_only and not (qdir / "eval" / "quality_eval.json").is_file():
            resume = ["--resume"] if (qdir / "checkpoints" / "last.ckpt").is_file() else ["--overwrite"]
            qgseg_cli(["quality", "train", "ssl_ph2", "--data-root", args.data_root, "--output-dir", str(out_dir),
                  "--name", f"q_{name}", *resume, "--set", "runtime.progress=false",
                  *[x for o in backbone_overrides(name) for x in ("--set", o)]], log)
            trained = True
        q_wall = time.time() - t0
        if not args.report_only:
            qgseg_cli(["compare", "ssl_ph2", "--methods", ",".join(METHODS), "--seeds", args.seeds, "--jobs", "1",
                  "--predictor", str(qdir / "checkpoints" / "best.ckpt"), "--data-root", args.data_root,
                  "--output-dir", str(out_dir), "--name", f"grid_{name}"], log)
        if (grid / "runs").is_dir():  # the call's own table holds its seeds only: rebuild it from every finished run
            refresh_comparison(grid, list(METHODS))
        old = committed.get(name) or {}
        results[name] = {**collect(qdir, grid, seeds, old), "trained_here": True, "overrides": backbone_overrides(name),
                         "predictor_wall_s": q_wall if trained else old.get("predictor_wall_s")}
        print(name, {k: v for k, v in results[name].items() if k in ("fixed_mae", "fixed_spearman", "mt-qw", "qar")},
              flush=True)
    for name, entry in committed.items():  # committed backbones this call did not name stay as they are
        if name not in results:
            results[name] = {**entry, "carried_over": "the whole backbone (not asked for)"}

    def dice(r: dict | None) -> str:
        if not r:
            return "n/a"
        v = list(r["per_seed"].values())
        wall = f", {r['wall_s']:.0f} s/run" if r.get("wall_s") is not None else ""
        return mean_std_text(v) + f" ({len(v)} seed{'s' * (len(v) > 1)}{wall})"

    def phase1(r: dict) -> str:
        return f"; phase 1 {r['predictor_wall_s']:.0f} s" if r.get("predictor_wall_s") is not None else ""

    rows = [(name, f"fixed masks MAE {r['fixed_mae']:.4f} / Spearman {r['fixed_spearman']:.3f} / AUROC<0.7 "
                   f"{r['fixed_auroc_0.7']:.3f}; synthetic MAE {r['synthetic_mae']:.4f}; val MAE {r['best_val_mae']:.4f}; "
                   f"MT-QW Dice {dice(r['mt-qw'])}; QAR Dice {dice(r['qar'])}{phase1(r)}") for name, r in results.items()]
    rows += [(f"{name}: carried over", carried_text(r)) for name, r in results.items() if r.get("carried_over")]
    rows.append(("wall s of this call", f"{time.time() - start:.0f}" + (" (--report-only: tabulation only)"
                                                                      if args.report_only else "")))
    note = args.note or committed_file.get("note")
    out = {"backbones": results, "seeds": args.seeds, "wall_s": time.time() - start, **({"note": note} if note else {}),
           "protocol": ("configs/ssl_ph2.yaml: phase 1 on the 140 labeled PH2 images at 96x96 (ResNets: the preset's "
                        "quarter width [16,32,64,128] + truth-map decoder, depth varied; DenseNet-121 / EfficientNet-B0: "
                        "MONAI, standard width, plain regression head), accuracy on the fixed PH2 test masks and 5 "
                        "synthetic masks per test image; then MT-QW and QAR (500 iterations, U-Net 16..128) guided by it, "
                        f"seeds {args.seeds}, test Dice; CPU, one thread per run")}
    path = write_result(OUT_NAME, out, rows, "Predictor backbones on PH2 (issue 14, third axis)",
                        draw=lambda path: plot(results, path))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
