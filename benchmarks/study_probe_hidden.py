"""Does the predictor judge the pseudolabels of *unlabeled* cases? The unbiased pseudolabel probe.

The probe that guided runs log during training (``guidance/probe_*``) scores pseudolabels of
*labeled* cases: the networks trained on them, so their masks there are better than on the images
that guidance actually weights. ACDC and CVC-ColonDB keep the labels of their "unlabeled" training
cases on disk (the runs never read them); this analysis reads them, after training, to measure g on
the pseudolabels it really judged. Nothing here trains or selects anything, so no label leaks
into a result.

For each finished run of a grid (no SUP: it makes no pseudolabels), from ``last.ckpt`` (the weights
at the end of training, teacher and second network included):

- the method's pseudolabel network (EMA teacher, CPS's other network, else the student) segments
  ``--cases`` unlabeled training cases spread over the pool, and the 16 labeled probe cases;
- g (the run's own critic; the grid's predictor for unguided runs) scores each mask;
- per set: g's MAE and Spearman against the true Dice, the mean true Dice of the pseudolabels
  plain and under the -QW weights (default T and tau), and the share kept.

Writes ``benchmarks/results/study_probe_hidden.{json,md}``:

    python benchmarks/study_probe_hidden.py runs/bench/ssl_acdc3_grid runs/bench/study_colondb_grid \\
        --seeds 0 --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA_ROOT, write_result

KEYS = ("probe_g_mae", "probe_g_spearman", "probe_dice", "probe_dice_weighted", "probe_kept", "probe_dice_top_half",
        "probe_dice_oracle_half")


def spread(ids: list[str], n: int) -> list[str]:
    """``n`` ids evenly spread over ``ids`` (all of them when there are fewer)."""
    if n >= len(ids):
        return list(ids)
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]


def probe_run(run_dir: Path, predictor: Path, n_cases: int, data_root: str | None, fabric) -> dict[str, Any]:
    """Both probes (labeled, hidden-label unlabeled) of one finished run; see the module docstring."""
    from qgseg.config import load_config
    from qgseg.data.loading import load_cases
    from qgseg.data.run_data import splits_record
    from qgseg.engine.checkpoint import load_checkpoint
    from qgseg.engine.segmentation import SegmentationTrainer
    from qgseg.guidance.critic import QualityCritic
    from qgseg.quality.scoring import QualityScorer

    last = run_dir / "segmenter" / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise SystemExit(f"{last}: missing; the probe needs the run's last checkpoint (its teacher and networks)")
    state = load_checkpoint(last, map_location="cpu")
    overrides = ["runtime.progress=false", "runtime.accelerator=cpu", "runtime.devices=1"]
    cfg = load_config(state["config"], overrides + ([f"data.root={data_root}"] if data_root else []))
    if state["iteration"] != cfg.train.iterations:
        raise SystemExit(f"{last}: iteration {state['iteration']} of {cfg.train.iterations}; the run is not finished")
    with tempfile.TemporaryDirectory() as scratch:  # setup() writes config and splits: not into the run
        trainer = SegmentationTrainer(cfg, scratch, fabric=fabric)
        trainer.setup()
    recorded = state["meta"].get("splits")  # absent in checkpoints older than the splits record
    now = splits_record(trainer.data)
    for role in ("labeled", "unlabeled") if recorded else ():
        if recorded[role] != now[role]:
            raise SystemExit(f"{last}: the {role} split re-drawn now differs from the run's; refusing to probe")
    if not recorded:
        print(f"{run_dir.name}: its checkpoint records no splits; they are re-drawn from its config "
              f"(data.split_seed {cfg.data.split_seed}) unchecked")
    trainer.load_weights(state)
    scorer = trainer._val_scorer()
    own_critic = scorer is not None
    if not own_critic:  # unguided run: judged by the grid's predictor, as its -QW variant would be
        critic = QualityCritic.from_checkpoint(predictor)
        scorer = QualityScorer(critic.model, critic.meta, critic.model_device)
    ds = trainer.data.dataset
    picked = load_cases(ds, spread(list(trainer.data.unlabeled), n_cases), "hidden-label cases", False)
    hidden = [c for c in picked if c.label is not None]  # an unlabeled split has none: said, not dropped silently
    if not hidden:
        raise SystemExit(f"{run_dir}: none of its {len(picked)} probed unlabeled cases of {ds.name} has a label on "
                         "disk; this probe needs unlabeled training cases that keep their labels (ACDC, CVC-ColonDB)")
    if len(hidden) < len(picked):
        print(f"{run_dir.name}: {len(picked) - len(hidden)} of {len(picked)} probed unlabeled cases have no label "
              "on disk and are left out")
    labeled = load_cases(ds, spread(list(trainer.data.labeled), 16), "labeled probe cases", False)
    out = {"iteration": state["iteration"], "splits_checked": bool(recorded), "n_hidden": len(hidden),
           "n_without_label": len(picked) - len(hidden), "n_labeled": len(labeled),
           "judge": "own critic" if own_critic else "grid predictor"}
    for name, cases in (("labeled", labeled), ("hidden", hidden)):
        out[name] = trainer.probe_pseudolabels(scorer, cases, weighted=True)
    return out


def fmt(v: float | None, pct: bool = False) -> str:
    if v is None or v != v:
        return "-"
    return f"{100 * v:.0f} %" if pct else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="+", type=Path, help="qgseg compare grid folders (with comparison.json)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", help="comma-separated variants (default: every variant of the grid but SUP)")
    parser.add_argument("--cases", type=int, default=64, help="unlabeled cases per run (spread over the pool)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--name", default="study_probe_hidden")
    args = parser.parse_args()
    from qgseg.engine.fabric import make_fabric
    from qgseg.config import load_config

    start = time.time()
    fabric = make_fabric(load_config(None, ["runtime.accelerator=cpu", "runtime.devices=1"]).runtime)
    seeds = [int(s) for s in args.seeds.split(",")]
    grids: dict[str, dict[str, Any]] = {}
    for grid in args.grids:
        if not (grid / "comparison.json").is_file():
            raise SystemExit(f"{grid}: no comparison.json; pass the folder of a `qgseg compare` grid")
        comparison = json.loads((grid / "comparison.json").read_text())
        predictor = Path(comparison["predictor"] or grid / "quality" / "checkpoints" / "best.ckpt")
        runs: dict[str, Any] = {}
        wanted = args.methods.split(",") if args.methods else [v for v in comparison["methods"] if v != "sup"]
        for variant in wanted:
            for seed in seeds:
                run_dir = grid / "runs" / f"{variant}_s{seed}"
                if not (run_dir / "result.json").is_file():
                    print(f"{run_dir.name}: not finished, skipped")
                    continue
                runs[run_dir.name] = {"variant": variant, "seed": seed,
                                      **probe_run(run_dir, predictor, args.cases, args.data_root, fabric)}
                r = runs[run_dir.name]
                print(f"{grid.name}/{run_dir.name}: labeled MAE {fmt(r['labeled']['probe_g_mae'])} "
                      f"dice {fmt(r['labeled']['probe_dice'])} | hidden MAE {fmt(r['hidden']['probe_g_mae'])} "
                      f"dice {fmt(r['hidden']['probe_dice'])} "
                      f"-> weighted {fmt(r['hidden'].get('probe_dice_weighted'))}",
                      flush=True)
        grids[grid.name] = {"predictor": str(predictor), "runs": runs}

    rows: list[tuple[str, str]] = []
    table = ["| grid | run | judge | labeled: g MAE | Spearman | pseudolabel Dice | hidden: g MAE | Spearman | "
             "pseudolabel Dice | -QW weighted | kept | best half by g | truly best half |", "|---" * 13 + "|"]
    for gname, g in grids.items():
        for rname, r in g["runs"].items():
            lab, hid = r["labeled"], r["hidden"]
            table.append(f"| {gname} | {rname} | {r['judge']} | {fmt(lab['probe_g_mae'])} | "
                         f"{fmt(lab.get('probe_g_spearman'))} | {fmt(lab['probe_dice'])} | {fmt(hid['probe_g_mae'])} | "
                         f"{fmt(hid.get('probe_g_spearman'))} | {fmt(hid['probe_dice'])} | "
                         f"{fmt(hid.get('probe_dice_weighted'))} | {fmt(hid.get('probe_kept'), pct=True)} | "
                         f"{fmt(hid.get('probe_dice_top_half'))} | {fmt(hid.get('probe_dice_oracle_half'))} |")
        if g["runs"]:
            mean = {s: {k: float(np.nanmean([r[s].get(k, np.nan) for r in g["runs"].values()])) for k in KEYS}
                    for s in ("labeled", "hidden")}
            g["mean"] = mean
            rows += [(f"{gname}: g MAE labeled / hidden", f"{fmt(mean['labeled']['probe_g_mae'])} / "
                                                           f"{fmt(mean['hidden']['probe_g_mae'])}"),
                     (f"{gname}: pseudolabel Dice labeled / hidden", f"{fmt(mean['labeled']['probe_dice'])} / "
                                                                     f"{fmt(mean['hidden']['probe_dice'])}"),
                     (f"{gname}: hidden Dice plain -> -QW weighted", f"{fmt(mean['hidden']['probe_dice'])} -> "
                                                                     f"{fmt(mean['hidden']['probe_dice_weighted'])}")]
    result = {"protocol": f"last.ckpt of each finished run (seeds {args.seeds}), {args.cases} unlabeled training "
                          "cases spread over the pool with their hidden labels, and the 16 labeled probe cases; "
                          "-QW weights with the run's T and tau; unguided runs judged by the grid's predictor",
              "wall_s": time.time() - start, "grids": grids}
    path = write_result(args.name, result, rows, "Pseudolabel probe on hidden labels of unlabeled cases")
    md = path.with_suffix(".md")
    md.write_text(md.read_text() + "\n## Per run\n\n" + "\n".join(table) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
