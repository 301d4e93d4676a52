"""How well does the frozen quality predictor judge what guidance shows it: the masks of
semi-supervised *students* during training, not weak snapshots?

Reads finished guided runs of ``qgseg compare`` grids (no training here):

- ``during training``: at every validation interval each guided run logs g's MAE and Spearman
  against the true Dice of the student's own predictions on the validation images
  (``guidance/g_mae_val``, ``guidance/g_spearman_val`` in ``segmenter/logs/csv/metrics.csv``);
  these are labeled images the predictor never trained on, scored as if unlabeled.
- ``final student, test``: the run's QC of its final (validation-selected) student on the test
  split (``qc/qc.csv``: predicted vs true Dice of each test case, worst class).

Writes ``benchmarks/results/quality_on_students.{json,md}``:

    python benchmarks/predictor_on_students.py runs/bench/ssl_ph2_grid runs/bench/ssl_acdc3_grid
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

RESULTS = Path(__file__).parent / "results"


def _series(metrics: Path) -> list[tuple[int, float, float]]:
    rows = []
    with open(metrics) as fh:
        for r in csv.DictReader(fh):
            if r.get("guidance/g_mae_val"):
                rows.append((int(float(r["step"])), float(r["guidance/g_mae_val"]), float(r["guidance/g_spearman_val"])))
    return rows


def _qc(path: Path) -> dict[str, float] | None:
    if not path.is_file():
        return None
    pred, true = [], []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            pred.append(min(float(v) for k, v in r.items() if k.startswith("predicted_dice_")))
            true.append(min(float(v) for k, v in r.items() if k.startswith("true_dice_")))
    p, t = np.array(pred), np.array(true)
    return {"mae": float(np.abs(p - t).mean()), "spearman": float(spearmanr(p, t).statistic), "n": len(p)}


def _ms(values: list[float]) -> str:
    v = [x for x in values if x == x]
    return "n/a" if not v else f"{np.mean(v):.3f} ± {np.std(v):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="+", type=Path, help="qgseg compare grid folders")
    args = parser.parse_args()
    start = time.time()
    out: dict = {"grids": {}}
    lines = ["# The quality predictor on semi-supervised students", "",
             "g's MAE / Spearman against the true Dice of the student's predictions: during training on the "
             "validation images (mean over validation intervals, and at the first and last one) and for the "
             "final student on the test split (QC). Mean ± std over seeds.", ""]
    for grid in args.grids:
        by_variant: dict[str, list[dict]] = {}
        for run in sorted((grid / "runs").iterdir()):
            metrics = run / "segmenter" / "logs" / "csv" / "metrics.csv"
            if not metrics.is_file():
                continue
            series = _series(metrics)
            if not series:
                continue  # unguided run: no predictor in the loop
            variant = run.name.rsplit("_s", 1)[0]
            by_variant.setdefault(variant, []).append({
                "run": run.name, "steps": [s for s, _, _ in series],
                "mae": [m for _, m, _ in series], "spearman": [s for _, _, s in series],
                "test_qc": _qc(run / "qc" / "qc.csv")})
        out["grids"][str(grid)] = by_variant
        lines += [f"## {grid.name}", "",
                  "| variant | seeds | val MAE (mean over training) | val Spearman (mean) | val MAE first -> last "
                  "| val Spearman first -> last | test QC MAE | test QC Spearman |",
                  "|---|---|---|---|---|---|---|---|"]
        for variant, runs in sorted(by_variant.items()):
            qc = [r["test_qc"] for r in runs if r["test_qc"]]
            lines.append(
                f"| {variant} | {len(runs)} | {_ms([float(np.mean(r['mae'])) for r in runs])} "
                f"| {_ms([float(np.nanmean(r['spearman'])) for r in runs])} "
                f"| {_ms([r['mae'][0] for r in runs])} -> {_ms([r['mae'][-1] for r in runs])} "
                f"| {_ms([r['spearman'][0] for r in runs])} -> {_ms([r['spearman'][-1] for r in runs])} "
                f"| {_ms([q['mae'] for q in qc])} | {_ms([q['spearman'] for q in qc])} |")
        lines.append("")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = "python benchmarks/predictor_on_students.py " + " ".join(str(g) for g in args.grids)
    out.update({"wall_s": time.time() - start, "command": command, "git_commit": commit,
                "protocol": "reads finished guided runs; no training. Validation: the student's predictions on "
                            "the run's validation images at every validation interval (guidance/g_*_val); test: "
                            "QC of the final student (qc/qc.csv, worst foreground class per case)"})
    lines += [f"Command: `{command}`  ", f"Commit: `{commit}`"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality_on_students.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "quality_on_students.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
