"""Compare trained quality predictors on the VALIDATION split, to choose a preset.

The in-training validation set is small (PH2: 20 images x 9 masks) and the run keeps the minimum
of its noisy validation MAEs, so two recipes within a few thousandths cannot be told apart by it.
This script scores each run's best checkpoint on a larger, independent validation draw:
``--masks-per-image`` fixed-seed synthetic masks per validation image (a seed the runs never
used) and the masks of the run's unseen real networks on the validation images. Runs are grouped
by recipe (``label=run_dir,run_dir,...``, one run per seed) and the table gives mean and sd.

    python benchmarks/quality_selection.py ph2 \\
        whole=runs/benchmarks/quality_ph2_200b776,runs/benchmarks/quality_ph2_seed1 \\
        crop=runs/benchmarks/quality_ph2_roi256,runs/benchmarks/quality_ph2_roi256_seed1

Writes ``benchmarks/results/quality_<which>_selection.{json,md}``. Test data is never read.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import validation_parser, write_result  # noqa: E402

from qgseg.config import load_config  # noqa: E402
from qgseg.data.run_data import prepare_run_data  # noqa: E402
from qgseg.quality.evaluation import evaluate_quality  # noqa: E402
from qgseg.quality.scoring import load_quality_predictor  # noqa: E402
from qgseg.quality.weak import snapshot_paths  # noqa: E402


def evaluate_run(run: Path, data_root: str, k: int, seed: int) -> dict[str, float]:
    cfg = load_config(run / "config.yaml", [f"data.root={data_root}", "runtime.progress=false"])
    data = prepare_run_data(cfg.data, cfg.output_dir)
    cases = [data.dataset.load(i) for i in data.val]
    scorer = load_quality_predictor(run / "checkpoints" / "best.ckpt", "cpu")
    unseen = snapshot_paths(run / "eval" / "unseen_snapshots")
    rep = evaluate_quality(scorer, cases, run / "eval_val_selection", seed=seed, k=k, real_snapshots=unseen)
    syn, real = rep["synthetic"]["all"], rep.get("real", {}).get("all", {})
    return {"val_synthetic_mae": syn["mae"], "val_synthetic_spearman": syn["spearman"], "val_synthetic_n": syn["n"],
            "val_real_mae": real.get("mae", float("nan")), "val_real_spearman": real.get("spearman", float("nan")),
            "val_real_n": real.get("n", 0)}


def main() -> None:
    args = validation_parser(__doc__, "recipes", "label=run_dir[,run_dir...] (one run folder per seed)").parse_args()
    start = time.time()
    out: dict = {"recipes": {}, "masks_per_image": args.masks_per_image, "seed": args.seed}
    rows = []
    for spec in args.recipes:
        label, _, runs = spec.partition("=")
        per_run = {}
        for run in filter(None, runs.split(",")):
            per_run[run] = evaluate_run(Path(run), args.data_root, args.masks_per_image, args.seed)
            print(label, run, {k: round(v, 4) for k, v in per_run[run].items()}, flush=True)
        summary = {}
        for key in ("val_synthetic_mae", "val_synthetic_spearman", "val_real_mae", "val_real_spearman"):
            vals = np.array([r[key] for r in per_run.values()], dtype=float)
            summary[key] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        out["recipes"][label] = {"runs": per_run, "summary": summary}
        ms = {k: f"{v['mean']:.4f} ± {v['sd']:.4f}" for k, v in summary.items()}
        rows.append((f"{label} ({len(per_run)} seed{'s' if len(per_run) > 1 else ''}): synthetic MAE / Spearman; real MAE / Spearman",
                     f"{ms['val_synthetic_mae']} / {ms['val_synthetic_spearman']}; "
                     f"{ms['val_real_mae']} / {ms['val_real_spearman']}"))
    out["wall_s"] = time.time() - start
    out["protocol"] = (f"validation split only; best checkpoint of each run; {args.masks_per_image} fixed-seed "
                       f"synthetic masks per image (seed {args.seed}) + the run's unseen real networks' masks; "
                       f"mean ± sd over the runs (seeds) of each recipe; CPU")
    rows.append(("wall s", f"{out['wall_s']:.0f}"))
    path = write_result(f"quality_{args.which}_selection", out, rows, f"Quality predictor recipes on validation: "
                                                                      f"{args.which}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
