"""Guided semi-supervised benchmark: methods x guidance x 3 seeds through `qgseg compare`.

    OMP_NUM_THREADS=1 python benchmarks/ssl_grid.py ph2   --data-root ../shared/data [--jobs 2]
    OMP_NUM_THREADS=1 python benchmarks/ssl_grid.py acdc3 --data-root ../shared/data [--jobs 2]
    # the study of issue 14 (13 variants per setting; writes study_<setting>.json, read by study_report.py)
    OMP_NUM_THREADS=1 python benchmarks/ssl_grid.py colondb --study --data-root ../shared/data --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/ssl_grid.py ph2 --study --grid ssl_ph2_grid ...  # reuse finished runs
    # the same grid at the field's full size on GPUs (the presets' "# GPU:" sizes) -> study_<setting>_fullsize.json
    python benchmarks/ssl_grid.py acdc3 --study --full-size --jobs 16 --data-root ../shared/data [--dry-run]

Protocol (CPU, identical for every method of a dataset; the presets say it in full):
* ph2: configs/ssl_ph2.yaml - paper split 140/20/40, derm-unlabeled (1,500) as the pool, 96x96,
  U-Net 16..128, 500 iterations of 8 labeled + 16 unlabeled, validation every 100.
* colondb: configs/ssl_colondb.yaml - CVC-ColonDB split by video sequence as listed in
  configs/splits/cvc_colondb/ (225 train / 48 val / 107 test frames), 3 of the 9 training sequences
  labeled (76 frames), the other 149 training frames unlabeled, 128x128, U-Net 16..256, 1500 iterations.
* acdc3 / acdc7: configs/ssl_acdc.yaml - 3 (68 slices) or 7 labeled patients (`data.labeled=7`), the
  other training slices unlabeled, 20 val / 40 test volumes, 128x128, U-Net 16..256, 500 iterations of
  8 + 16, per-class Dice and HD95 on volumes.
Checkpoints selected on validation only; 3 seeds; one quality predictor per dataset trained on
that dataset's labeled cases only (phase 1 of the grid; the leak guard checks every run).
Writes benchmarks/results/ssl_<name>.json/.md (with --study: study_<name>.json/.md): `methods` (dice, dice_std, hd95, wall_s, seeds,
per class), `guided_vs_base` (paired difference, wins), and per variant what explains the
outcome: g's error on the student's validation predictions during training, mean q of the
pseudolabels, share of unlabeled samples kept, and g's QC accuracy on the test predictions.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA_ROOT, RESULTS, START_COMMIT, check_no_dropped_seeds, command_line, refresh_comparison

# setting -> (preset, overrides that define the setting on top of the preset)
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "ph2": ("ssl_ph2", []),
    "colondb": ("ssl_colondb", []),
    "acdc3": ("ssl_acdc", []),
    "acdc7": ("ssl_acdc", ["data.labeled=7"]),
}
# The study's 13 variants per setting (issue 14): each method, its -QW variant, QAR, and QAR on top of
# a -QW variant (MT-QW: pass another with --methods once the best -QW of a setting is known).
METHODS = "sup,pl-c,pl-qw,mt,mt-qw,cps,cps-qw,fixmatch,fixmatch-qw,bcp,bcp-qw,qar,mt-qw+qar"


def run_diagnostics(run_dir: Path) -> dict[str, float]:
    """Guidance statistics of one run: means over its validations, and g's QC of its test predictions."""
    out: dict[str, float] = {}
    hist = run_dir / "segmenter" / "train_history.json"
    if hist.is_file():
        rows = json.loads(hist.read_text())["history"]
        for key in ("guidance/g_mae_val", "guidance/g_spearman_val", "guidance/q_pseudo", "guidance/kept",
                    "guidance/q_student", "guidance/probe_g_mae", "guidance/probe_g_spearman", "guidance/probe_dice",
                    "guidance/probe_kept", "guidance/probe_dice_weighted", "guidance/probe_dice_top_half",
                    "guidance/probe_dice_oracle_half"):
            vals = [r[key] for r in rows if key in r and r[key] == r[key]]  # NaN: every probe weight was 0
            if vals:
                out[key.split("/")[1]] = float(np.mean(vals))
    res = run_dir / "result.json"
    if res.is_file():
        qc = json.loads(res.read_text()).get("qc", {}).get("metrics", {})
        out.update({f"qc_test_{k}": qc[k] for k in ("mae", "spearman") if k in qc})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(SETTINGS))
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--output-dir", default="runs/bench")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--predictor", help="reuse a phase-1 predictor (trained on the same labeled cases)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tag", help="a variant of the protocol: results go to ssl_<which>_<tag>.json")
    parser.add_argument("--study", action="store_true",
                        help="write study_<which>.json/.md (issue 14's result files) instead of ssl_<which>")
    parser.add_argument("--grid", help="grid folder name under --output-dir (default <result name>_grid); naming an "
                                       "existing grid of the same protocol reuses its finished runs")
    parser.add_argument("--note", default="", help="provenance or remarks stored with the result")
    parser.add_argument("--full-size", action="store_true",
                        help="the field's full size for a GPU: every '# GPU:' size of the preset (results get the tag "
                             "'fullsize'; runs go round-robin over the visible GPUs)")
    parser.add_argument("--dry-run", action="store_true", help="print the qgseg compare command and exit")
    parser.add_argument("--report-only", action="store_true",
                        help="no training: tabulate the grid's finished runs (unfinished ones are listed as such)")
    args = parser.parse_args()
    preset, setting_overrides = SETTINGS[args.which]
    gpu_overrides: list[str] = []
    if args.full_size:  # the preset's GPU sizes first, so that the setting and the user's --set win
        from qgseg.config import preset_gpu_overrides

        gpu_overrides = preset_gpu_overrides(preset)
        setting_overrides = gpu_overrides + setting_overrides
    tag = "_".join(filter(None, ["fullsize" if args.full_size else "", args.tag]))
    stem = ("study_" if args.study else "ssl_") + args.which + (f"_{tag}" if tag else "")
    name = args.grid or f"{stem}_grid"
    cmd = [sys.executable, "-m", "qgseg.cli.main", "compare", preset, "--methods", args.methods, "--seeds", args.seeds,
           "--jobs", str(args.jobs), "--output-dir", args.output_dir, "--name", name, "--data-root", args.data_root]
    if args.predictor:
        cmd += ["--predictor", args.predictor]
    overrides = setting_overrides + args.overrides
    for o in overrides:
        cmd += ["--set", o]
    compare_command = " ".join(cmd[1:]).replace("-m qgseg.cli.main", "qgseg", 1)  # as a user would type it
    if args.dry_run:
        print(compare_command)
        return
    start = time.time()
    grid = Path(args.output_dir) / name
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.methods.split(",")]
    not_done: list[str] = []
    if args.report_only:
        if not (grid / "runs").is_dir():
            raise SystemExit(f"{grid}: no runs/ folder here, so nothing to tabulate; benchmarks/results/{stem}.json "
                             "is left as it is")
        not_done = refresh_comparison(grid, variants, seeds,
                                      extra={"predictor": args.predictor} if args.predictor else None)
        code = None
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        code = subprocess.run(cmd, env=env, check=False).returncode
    comparison = json.loads((grid / "comparison.json").read_text())
    methods = comparison["methods"]
    for variant, row in methods.items():
        diags = [run_diagnostics(grid / "runs" / f"{variant}_s{s}") for s in row.get("seeds", [])]
        keys = sorted({k for d in diags for k in d})
        row["diagnostics"] = {k: float(np.mean([d[k] for d in diags if k in d])) for k in keys}
    predictor = comparison.get("predictor")
    qeval = None
    if predictor:
        qdir = Path(predictor).parents[1]
        qfile = qdir / "eval" / "quality_eval.json"
        if qfile.is_file():
            q = json.loads(qfile.read_text())
            qeval = {"synthetic": {k: q["synthetic"]["all"].get(k) for k in ("mae", "spearman", "pearson", "n")}}
    guided = comparison.get("guided_vs_base", {})
    from qgseg.compare import is_guided

    # guided by name, not by having a base in this grid (a grid of guided variants alone has no bases)
    unguided = {v: r for v, r in methods.items() if not is_guided(v) and r.get("dice") is not None}
    best_unguided = max(unguided, key=lambda v: unguided[v]["dice"]) if unguided else None
    done_guided = [v for v in methods if is_guided(v) and methods[v].get("dice") is not None]
    best_guided = max(done_guided, key=lambda v: methods[v]["dice"]) if done_guided else None
    result = {
        "setting": args.which, "preset": preset, "setting_overrides": setting_overrides,
        "overrides": gpu_overrides + args.overrides,  # how this grid differs from the setting's CPU protocol
        "methods": methods, "guided_vs_base": guided, "predictor": predictor, "predictor_eval": qeval,
        "best_unguided": best_unguided, "best_guided": best_guided,
        "best_guided_beats_best_unguided": (best_guided is not None and best_unguided is not None
                                            and methods[best_guided]["dice"] > methods[best_unguided]["dice"]),
        "wall_s": comparison.get("wall_s") if args.report_only else time.time() - start,
        "compare_command": compare_command,
        "compare_exit_code": code, "grid": str(grid), "runs_not_done": not_done,
        "runs_wall_s_total": sum((r.get("wall_s") or 0) * len(r.get("seeds", [])) for r in methods.values()),
        "protocol": (f"configs/{preset}.yaml (see the header), variants {args.methods}, seeds {args.seeds}, "
                     f"qgseg compare --jobs {args.jobs} " + ("runs round-robin over the GPUs, at the presets' "
                                                              "'# GPU:' sizes" if args.full_size else
                                                              "single-thread runs on the CPU")
                     + "; checkpoint selected on val; "
                     "test split scored once per run" + (f"; overrides {overrides}" if overrides else "")),
        "command": command_line(), "git_commit": START_COMMIT, "note": args.note,
    }
    check_no_dropped_seeds(stem, result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stem}.json"
    out.write_text(json.dumps(result, indent=2, default=float))
    unit = {"pixels": "px"}.get(comparison.get("unit") or "", comparison.get("unit") or "")
    lines = [f"# Guided SSL benchmark: {stem}", "",
             ("| variant | test Dice (mean ± std over seeds) | HD95 | wall s / run | seeds | vs own base (paired) | wins "
             "| g MAE on student (val) | q of pseudolabels | kept | g QC MAE (test) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, r in methods.items():
        if r.get("dice") is None:  # nothing to average: say why instead of a number
            lines.append(f"| {v} | {'failed' if r.get('failed') else 'not run yet'} | | | 0 | | | | | | |")
            continue
        g = guided.get(v)
        d = r.get("diagnostics", {})
        fmt = lambda k, d=d: f"{d[k]:.3f}" if k in d else ""
        pm = lambda mean, std, sign="": f"{mean:{sign}.4f}" + ("" if std is None else f" ± {std:.4f}")  # noqa: E731
        lines.append(f"| {v} | {pm(r['dice'], r['dice_std'])} | {r['hd95']:.2f} {unit} | {r['wall_s']:.0f} | "
                     f"{len(r['seeds'])} | " + (f"{pm(g['diff'], g['diff_std'], '+')} vs {g['base']} | "
                                                f"{g['wins']}/{g['n']}" if g and g.get("diff") is not None else " | ")
                     + f" | {fmt('g_mae_val')} | {fmt('q_pseudo')} | {fmt('kept')} | {fmt('qc_test_mae')} |")
    lines += ["", (f"Best unguided: {best_unguided}; best guided: {best_guided}; guided beats unguided: "
                  f"{result['best_guided_beats_best_unguided']}."), ""]
    if not_done:
        lines += [f"Runs not finished within the session's CPU budget (not in the table): {', '.join(not_done)}.", ""]
    if (grid / "comparison.png").is_file():  # per-seed dots and mean +- std, next to the table
        import shutil

        shutil.copyfile(grid / "comparison.png", RESULTS / f"{stem}.png")
        lines += [f"![test Dice per seed]({stem}.png)", ""]
    if qeval:
        s = qeval["synthetic"]
        lines += [(f"Quality predictor (phase 1, labeled cases only): synthetic test masks MAE {s['mae']:.3f}, "
                  f"Spearman {s['spearman']:.3f} (n={s['n']})."), ""]
    lines += ([f"Note: {args.note}", ""] if args.note else []) + [f"Protocol: {result['protocol']}", "", f"Command: `{result['command']}`",
              f"Grid: `{result['compare_command']}` (resumable: finished runs are skipped)", f"Commit: `{START_COMMIT}`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
