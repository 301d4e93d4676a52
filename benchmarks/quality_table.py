"""Side-by-side table of quality-predictor results (``benchmarks/results/quality_*.json``), grouped
into recipes, with mean ± std over the seeds of each recipe. Selection is by validation MAE only;
the test columns are reported, never used to choose.

    python benchmarks/quality_table.py --out quality_colondb_pretraining \\
        "no pretraining=archive/quality_colondb_e10_nopretrain,archive/quality_colondb_e10_nopretrain_s1" \\
        "restoration pretraining=archive/quality_colondb_e10_pretrain600,archive/quality_colondb_e10_pretrain600_s1"
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
#: (column, key in the result JSON)
COLUMNS = (("val MAE", "best_val_mae"), ("test synthetic MAE", "synthetic_mae"),
           ("test synthetic Spearman", "synthetic_spearman"), ("test synthetic AUROC<0.7", "synthetic_auroc_0.7"),
           ("unseen networks AUROC<0.7", "real_auroc_0.7"), ("truth-map Dice", "truth_map_dice"),
           ("wall s (with pretraining)", "wall_s"))


def _ms(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="LABEL=result1,result2,... (names without .json)")
    parser.add_argument("--out", required=True, help="name of the table under benchmarks/results/")
    args = parser.parse_args()
    start = time.time()
    table: dict[str, dict] = {}
    lines = ["| recipe | seeds | " + " | ".join(c for c, _ in COLUMNS) + " | pretraining |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for spec in args.recipes:
        label, names = spec.split("=", 1)
        runs = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names.split(",")]
        pre = runs[0].get("pretraining")
        pre_text = "none" if not pre else (f"{pre.get('method', '').split(' (')[0]}, {pre.get('steps')} steps on "
                                           f"{pre.get('images')} training images, {pre.get('wall_s', 0):.0f} s"
                                           if pre.get("steps") else str(pre.get("method")))
        table[label] = {"results": names.split(","), "pretraining": pre,
                        **{key: [r.get(key) for r in runs] for _, key in COLUMNS}}
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(_ms([r.get(k) for r in runs]) for _, k in COLUMNS)
                     + f" | {pre_text} |")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = "python benchmarks/quality_table.py --out " + args.out + " " + " ".join(f'"{r}"' for r in args.recipes)
    lines += ["", f"Command: `{command}`  ", f"Commit: `{commit}`"]
    (RESULTS / f"{args.out}.json").write_text(json.dumps(
        {"recipes": table, "command": command, "git_commit": commit, "wall_s": time.time() - start,
         "protocol": "aggregates finished quality benchmarks; mean ± std over the seeds of each recipe"}, indent=1))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
