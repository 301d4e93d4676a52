"""Issue 14, ablations on PH2 (the paper's grids), on the ssl_ph2 protocol.

    OMP_NUM_THREADS=1 python benchmarks/study_ablations.py --seeds 0 --data-root ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/study_ablations.py --axes lambda_qar,qw_threshold --seeds 0
    # more seeds for an axis's best point only
    OMP_NUM_THREADS=1 python benchmarks/study_ablations.py --axes weak_probability --values 0.5 --seeds 1,2
    python benchmarks/study_ablations.py --report-only          # tabulate what has run so far

Axes (one seed per point unless --seeds says more; the default point of each axis is the study's own
runs, ``--base-grid``, with all of their seeds):

* ``lambda_qar`` in {0, 0.01, 0.05, 0.1, 0.2}: QAR (``guidance.qar_weight``); 0 is the SUP runs (QAR off);
* ``qw_power`` T in {1, 2, 4} and ``qw_threshold`` tau in {0, 0.5, 0.7}: MT-QW;
* ``unlabeled_pool`` in {250, 500, 1500} (``data.unlabeled_limit``, nested subsets of derm-unlabeled): MT
  and MT-QW, to see whether guidance matters more with a smaller pool;
* ``masks_per_image`` K in {10, 20, 50} and ``weak_probability`` in {0, 0.15, 0.5}: phase 1 retrained
  (``qgseg quality train ssl_ph2``, scored on the fixed PH2 test masks), then MT-QW and QAR with it.

Each point is a ``qgseg compare ssl_ph2`` grid under ``--output-dir`` (resumable: finished runs and
predictors are reused; rerun to continue). Writes ``benchmarks/results/study_ablations_ph2.{json,md,png}``
after every point, so a partial study is tabulated too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA_ROOT, grid_rows, qgseg_cli, refresh_comparison, write_result  # noqa: E402

# axis -> key, default, values, variants, whether phase 1 is retrained for each value
AXES: dict[str, dict] = {
    "lambda_qar": {"key": "guidance.qar_weight", "default": 0.01, "values": [0.0, 0.01, 0.05, 0.1, 0.2],
                   "variants": ["qar"]},
    "qw_threshold": {"key": "guidance.qw_threshold", "default": 0.5, "values": [0.0, 0.5, 0.7], "variants": ["mt-qw"]},
    "qw_power": {"key": "guidance.qw_power", "default": 2.0, "values": [1.0, 2.0, 4.0], "variants": ["mt-qw"]},
    "unlabeled_pool": {"key": "data.unlabeled_limit", "default": 1500, "values": [250, 500, 1500],
                       "variants": ["mt", "mt-qw"]},
    "masks_per_image": {"key": "quality.masks_per_image", "default": 10, "values": [10, 20, 50],
                        "variants": ["mt-qw", "qar"], "predictor": True},
    "weak_probability": {"key": "quality.weak_probability", "default": 0.15, "values": [0.0, 0.15, 0.5],
                         "variants": ["mt-qw", "qar"], "predictor": True},
}
OUT_NAME = "study_ablations_ph2"


def _tag(axis: str, value: float) -> str:
    return f"{axis}_{value:g}".replace(".", "p")


def _rows(grid: Path, variants: list[str], seeds: list[str] | None, rename: dict[str, str] | None = None) -> dict:
    """:func:`common.grid_rows`, with variants renamed (lambda_qar 0: the SUP runs under "qar")."""
    return {(rename or {}).get(v, v): r for v, r in grid_rows(grid, variants, seeds).items()}


def _predictor_accuracy(qrun: Path) -> dict | None:
    ev = qrun / "eval" / "quality_eval.json"
    if not ev.is_file():
        return None
    e = json.loads(ev.read_text())
    fixed = (e.get("ph2_fixed") or {}).get("all") or {}
    syn = e["synthetic"]["all"]
    return {"fixed_mae": fixed.get("mae"), "fixed_spearman": fixed.get("spearman"),
            "synthetic_mae": syn["mae"], "synthetic_spearman": syn["spearman"]}


def run_point(axis: str, value: float, args, log: Path) -> None:
    """Train (or resume) one non-default point of ``axis``."""
    spec, out = AXES[axis], Path(args.output_dir)
    setting = f"{spec['key']}={value:g}" if not isinstance(value, int) else f"{spec['key']}={value}"
    predictor = args.predictor
    if spec.get("predictor"):
        qname = f"q_{_tag(axis, value)}"
        if not (out / qname / "eval" / "quality_eval.json").is_file():
            resume = ["--resume"] if (out / qname / "checkpoints" / "last.ckpt").is_file() else ["--overwrite"]
            qgseg_cli(["quality", "train", "ssl_ph2", "--data-root", args.data_root, "--output-dir", str(out),
                       "--name", qname, *resume, "--set", "runtime.progress=false", "--set", setting], log)
        predictor = str(out / qname / "checkpoints" / "best.ckpt")
    sets = [] if spec.get("predictor") else ["--set", setting]
    qgseg_cli(["compare", "ssl_ph2", "--methods", ",".join(spec["variants"]), "--seeds", args.seeds, "--jobs", "1",
               "--predictor", predictor, "--data-root", args.data_root, "--output-dir", str(out),
               "--name", _tag(axis, value), *sets], log)


def points(axes: list[str], values: list[float] | None = None) -> list[tuple[str, float]]:
    """The (axis, value) points to train: each axis's non-default values (``values``: only those). The default
    point is the study grid's own runs, and lambda_qar = 0 is QAR switched off, i.e. the SUP runs."""
    chosen = [(axis, v) for axis in axes for v in AXES[axis]["values"]
              if v != AXES[axis]["default"] and not (axis == "lambda_qar" and v == 0)]
    if values is None:
        return chosen
    if stray := [v for v in values if not any(abs(v - c) < 1e-9 for _, c in chosen)]:
        raise SystemExit(f"--values {', '.join(f'{v:g}' for v in stray)}: not a trainable point of "
                         f"{', '.join(axes)} (their points: {', '.join(f'{a} {c:g}' for a, c in chosen)})")
    return [(axis, v) for axis, v in chosen if any(abs(v - w) < 1e-9 for w in values)]


def collect(args) -> dict:
    """Every axis's rows from what has run: default points from the base grid, the others from theirs."""
    out, base = Path(args.output_dir), Path(args.base_grid)
    seeds = [s.strip() for s in args.seeds.split(",")]
    axes = {}
    for axis, spec in AXES.items():
        rows = []
        for value in spec["values"]:
            row: dict = {"value": value}
            if value == spec["default"]:
                row["methods"] = _rows(base, spec["variants"], None)
                row["grid"] = str(base)
                if spec.get("predictor"):
                    row["predictor"] = _predictor_accuracy(Path(args.predictor).parents[1])
            elif axis == "lambda_qar" and value == 0:
                row["methods"] = _rows(base, ["sup"], None, rename={"sup": "qar"})
                row["note"] = "QAR off: the SUP runs"
                row["grid"] = str(base)
            else:
                grid = out / _tag(axis, value)
                if (grid / "runs").is_dir():  # seeds trained by separate calls: the table counts them all
                    refresh_comparison(grid, spec["variants"])
                row["methods"] = _rows(grid, spec["variants"], seeds)
                row["grid"] = str(grid)
                if spec.get("predictor"):
                    row["predictor"] = _predictor_accuracy(out / f"q_{_tag(axis, value)}")
            if row["methods"]:
                rows.append({k: v for k, v in row.items() if v is not None})
        axes[axis] = {"title": axis, "variant": spec["variants"][0], "variants": spec["variants"], "key": spec["key"],
                      "default": spec["default"], "values": spec["values"], "rows": rows}
    return axes


def plot(axes: dict, path: Path) -> None:
    """One panel per axis: each variant's seed-0 test Dice over the values (line) and every seed (grey dots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(axes))
    rows = -(-len(axes) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    FigureCanvasAgg(fig)
    for k, (axis, a) in enumerate(axes.items(), start=1):
        ax = fig.add_subplot(rows, cols, k)
        xs = list(range(len(a["values"])))
        for v in a["variants"]:
            pts = [(i, r["methods"][v]) for i, val in enumerate(a["values"]) for r in a["rows"]
                   if r["value"] == val and v in r["methods"]]
            if not pts:
                continue
            # why seed 0: the new points have one seed; the line pairs them with the default's seed 0
            ax.plot([i for i, _ in pts], [m["per_seed"].get("0", m["dice"]) for _, m in pts], "-o", label=v)
            for i, m in pts:
                ax.scatter([i] * len(m["per_seed"]), list(m["per_seed"].values()), s=8, color="grey", zorder=3)
        ax.set_xticks(xs, [f"{x:g}" + ("*" if x == a["default"] else "") for x in a["values"]])
        ax.set_title(f"{axis} ({a['key']})", fontsize=9)
        ax.set_ylabel("test Dice") if k % cols == 1 else None
        ax.legend(fontsize=7)
    fig.suptitle("PH2 ablations: seed 0 (lines), every seed (grey); * = default", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(axes: dict, args, wall: float) -> Path:
    rows = []
    for axis, a in axes.items():
        for r in a["rows"]:
            cells = "; ".join(f"{v} {m['dice']:.4f}" + (f" ± {m['dice_std']:.4f}" if m.get("dice_std") else "")
                              + f" (n={len(m['seeds'])}" + (f"; seed 0: {m['per_seed']['0']:.4f}" if len(m["seeds"]) > 1
                                                           and "0" in m["per_seed"] else "") + ")"
                              for v, m in r["methods"].items())
            p = r.get("predictor")
            if p and p.get("fixed_mae") is not None:
                cells += f"; predictor fixed-mask MAE {p['fixed_mae']:.4f} / Spearman {p['fixed_spearman']:.3f}"
            rows.append((f"{axis} = {r['value']:g}" + (" (default)" if r["value"] == a["default"] else ""), cells))
    missing = [f"{axis} {v:g}" for axis, a in axes.items() for v in a["values"]
               if not any(r["value"] == v for r in a["rows"])]
    result = {"axes": axes, "missing": missing, "wall_s": wall, "seeds": args.seeds, "note": args.note,
              "protocol": ("configs/ssl_ph2.yaml (PH2 140/20/40, derm-unlabeled pool, U-Net 16..128 at 96x96, 500 "
                           "iterations, checkpoint on val); one setting changed per point, seeds "
                           f"{args.seeds} for new points; default points are the study grid {args.base_grid} (all "
                           "its seeds); predictor axes retrain phase 1 on the 140 labeled images; CPU, one thread "
                           "per run")}
    extra = [("note", args.note)] if args.note else []
    drawn = any(a["rows"] for a in axes.values())
    path = write_result(OUT_NAME, result, rows + [("not run yet", ", ".join(missing) or "none")] + extra,
                        "Ablations on PH2 (issue 14)", draw=(lambda out: plot(axes, out)) if drawn else None)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--axes", default=",".join(AXES), help="comma-separated subset of " + ", ".join(AXES))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--values", help="comma-separated: train only these values of the chosen axes (e.g. the "
                                         "best point, for more seeds)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--output-dir", default="runs/bench/ablations")
    parser.add_argument("--base-grid", default="runs/bench/ssl_ph2_grid", help="the study's PH2 grid (defaults)")
    parser.add_argument("--predictor", default="runs/bench/q_ssl_ph2/checkpoints/best.ckpt",
                        help="the study's PH2 predictor (the default point of the predictor axes)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--note", default=None, help="provenance to record (e.g. the commands that trained the points)")
    args = parser.parse_args()
    start = time.time()
    chosen = [a.strip() for a in args.axes.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in AXES]
    if unknown:
        raise SystemExit(f"unknown axis {unknown}; choose from {', '.join(AXES)}")
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    log = Path(args.output_dir) / "ablations.log"
    if not args.report_only:
        try:
            values = [float(v) for v in args.values.split(",")] if args.values else None
        except ValueError:
            raise SystemExit(f"--values {args.values!r}: expected comma-separated numbers, e.g. 0.5 or 20,50") from None
        for axis, value in points(chosen, values):
            t0 = time.time()
            run_point(axis, value, args, log)
            print(f"{axis} = {value:g}: done in {time.time() - t0:.0f} s", flush=True)
            try:  # a partial study is tabulated too, but a table refused (see common.write_result) stops no training
                write(collect(args), args, time.time() - start)
            except SystemExit as refused:
                print(f"table not updated: {refused}", flush=True)
    print(f"wrote {write(collect(args), args, time.time() - start)}")


if __name__ == "__main__":
    main()
