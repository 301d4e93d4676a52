"""Side-by-side table of quality-predictor results (``benchmarks/results/quality_*.json``), grouped
into recipes, with mean ± std over the seeds of each recipe. Selection is by validation MAE only;
the test columns are reported, never used to choose.

    python benchmarks/quality_table.py --out quality_colondb_pretraining \\
        "no pretraining=archive/quality_colondb_e10_nopretrain,archive/quality_colondb_e10_nopretrain_s1" \\
        "restoration pretraining=archive/quality_colondb_e10_pretrain600,archive/quality_colondb_e10_pretrain600_s1"

``--into quality_ph2`` also stores the first recipe's per-seed values and mean ± std under ``seeds`` in
that result file (the preset's own result, which keeps its single-run keys) and adds ``pretraining``
when it is missing.
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
           ("unseen networks MAE", "real_mae"), ("unseen networks AUROC<0.7", "real_auroc_0.7"),
           ("PH2 fixed masks MAE", "ph2_fixed.mae"), ("PH2 fixed masks Spearman", "ph2_fixed.spearman"),
           ("PH2 fixed masks AUROC<0.7", "ph2_fixed.auroc_0.7"), ("truth-map Dice", "truth_map_dice"),
           ("training wall s (with pretraining)", "training_wall_s"))


def value(result: dict, key: str) -> float | None:
    """``result[key]``; dotted keys reach into sections; a re-evaluated result's training time is
    ``training_wall_s``, a fresh one's is ``wall_s``."""
    if key == "training_wall_s":
        return result.get("training_wall_s", result.get("wall_s"))
    if key in result:
        return result[key]
    section, _, sub = key.partition(".")  # keys themselves may hold dots ("auroc_0.7")
    inner = result.get(section)
    return inner.get(sub) if isinstance(inner, dict) else None


def _ms(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def into(name: str, recipe: tuple[str, dict], command: str) -> None:
    """Store ``recipe``'s per-seed values and mean ± std in ``results/<name>.json`` under ``seeds``
    and one line under the markdown table."""
    label, rec = recipe
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text())
    seeds = {"recipe": label, "results": rec["results"], "command": command}
    for _, key in COLUMNS:
        v = [x for x in rec[key] if x is not None]
        if v:
            seeds[key] = {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
    result["seeds"] = seeds
    result.setdefault("pretraining", rec["pretraining"])
    path.write_text(json.dumps(result, indent=2, default=float))
    md = RESULTS / f"{name}.md"
    text = md.read_text().split("\n\nSeeds (")[0].rstrip("\n")
    summary = "; ".join(f"{c} {_ms(rec[k])}" for c, k in COLUMNS if any(x is not None for x in rec[k]))
    md.write_text(text + f"\n\nSeeds ({len(rec['results'])}: {', '.join(rec['results'])}): {summary}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="LABEL=result1,result2,... (names without .json)")
    parser.add_argument("--out", required=True, help="name of the table under benchmarks/results/")
    parser.add_argument("--into", help="result name (e.g. quality_ph2) that receives the first recipe's seeds")
    args = parser.parse_args()
    start = time.time()
    table: dict[str, dict] = {}
    columns = []  # only the columns some result has (PH2's fixed masks exist for PH2 only)
    for spec in args.recipes:
        label, names = spec.split("=", 1)
        runs = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names.split(",")]
        columns += [c for c in COLUMNS if c not in columns and any(value(r, c[1]) is not None for r in runs)]
        pre = runs[0].get("pretraining")
        pre_text = "none" if not pre else (f"{pre.get('method', '').split(' (')[0]}, {pre.get('steps')} steps on "
                                           f"{pre.get('images')} training images, {pre.get('wall_s', 0):.0f} s"
                                           if pre.get("steps") else str(pre.get("method")))
        table[label] = {"results": names.split(","), "pretraining": pre, "pretraining_text": pre_text,
                        **{key: [value(r, key) for r in runs] for _, key in COLUMNS}}
    columns = [c for c in COLUMNS if c in columns]
    lines = ["| recipe | seeds | " + " | ".join(c for c, _ in columns) + " | pretraining |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for label, rec in table.items():
        lines.append(f"| {label} | {len(rec['results'])} | " + " | ".join(_ms(rec[k]) for _, k in columns)
                     + f" | {rec['pretraining_text']} |")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True).stdout.strip()
    command = ("python benchmarks/quality_table.py --out " + args.out + (f" --into {args.into}" if args.into else "")
               + " " + " ".join(f'"{r}"' for r in args.recipes))
    lines += ["", f"Command: `{command}`  ", f"Commit: `{commit}`"]
    (RESULTS / f"{args.out}.json").write_text(json.dumps(
        {"recipes": table, "command": command, "git_commit": commit, "wall_s": time.time() - start,
         "protocol": "aggregates finished quality benchmarks; mean ± std over the seeds of each recipe"}, indent=1))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    if args.into:
        into(args.into, next(iter(table.items())), command)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
