"""Write the study's tables into docs/benchmarks.md from the result files of benchmarks/ssl_grid.py.

    python benchmarks/study_report.py                 # reads benchmarks/results/study_<setting>.json
    python benchmarks/study_report.py --results DIR --out docs/benchmarks.md

For each setting (ph2, colondb, acdc3, acdc7) it reads `study_<setting>.json` (written by
`ssl_grid.py <setting> --study`) or, when there is none, the earlier grid `ssl_<setting>.json`,
and says which file each column comes from. It writes, between the markers
`<!-- study-report:begin -->` and `<!-- study-report:end -->` of the output (the rest of the file is
hand-written and kept; a missing file is created from a short template):

* the main table: method x setting, test Dice mean ± std over seeds (HD95 for ACDC), wall s per run;
* per guided variant the paired difference against its own base method and the seeds it won;
* a paired test across seeds and settings per guidance mechanism (QW, QAR, QW+QAR): Wilcoxon
  signed-rank over every (setting, guided variant, seed) pair of guided vs base Dice;
* best guided vs best unguided per setting (the issue's goal: +1 Dice point);
* the exact commands behind every number, and the parts of the study not run yet.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

# the variant grammar (METHOD[-qw][+qar], qar) of qgseg compare; importing it loads no torch
from qgseg.compare import _parse

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUT = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- study-report:begin -->", "<!-- study-report:end -->"

SETTINGS = ["ph2", "colondb", "acdc3", "acdc7"]
SETTING_TITLES = {"ph2": "PH2", "colondb": "CVC-ColonDB", "acdc3": "ACDC-3", "acdc7": "ACDC-7"}
# The issue's 13 variants per setting, in table order (ssl_grid.METHODS).
STUDY_METHODS = ["sup", "pl-c", "pl-qw", "mt", "mt-qw", "cps", "cps-qw", "fixmatch", "fixmatch-qw", "bcp", "bcp-qw",
                 "qar", "mt-qw+qar"]
MECHANISMS = {"QW": (True, False), "QAR": (False, True), "QW+QAR": (True, True)}
# Parts of issue 14 that this report cannot tabulate yet (no result files for them).
NOT_TABULATED = [
    "PH2 extras: PL-T, UA-MT(-QW), ICT(-QW), CL(-QW)",
    "architectures (U-Net, U-Net++, Attention U-Net, SwinUNETR 2D) on PH2 and ACDC-3",
    "predictor backbones (ResNet-10/18/34, a non-ResNet MONAI backbone) on PH2",
    ("ablations on PH2: lambda_qar, -QW power T and threshold tau, masks per image K, share of weak-network "
    "masks, unlabeled pool size"),
    ("the predictor's MAE / Spearman against the true Dice of the pseudolabels it weighted, per guided run "
    "(the grids log g's error on the student's validation predictions, `diagnostics` in each result)"),
    "overlays of the test cases where guidance changed the result most, and the plots of each table",
    "the same grid at full size on a GPU",
]
TEMPLATE = f"""# Benchmarks

Hand-written text goes outside the generated block below; `python benchmarks/study_report.py`
rewrites only the block.

{BEGIN}
{END}
"""


def load_settings(results: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{setting: (file, result)}`` from ``study_<s>.json``, else ``ssl_<s>.json``; absent settings left out."""
    found = {}
    for s in SETTINGS:
        for stem in (f"study_{s}", f"ssl_{s}"):
            path = results / f"{stem}.json"
            if path.is_file():
                found[s] = (path, json.loads(path.read_text()))
                break
    return found


def _done(row: dict[str, Any] | None) -> bool:
    return bool(row) and row.get("dice") is not None


def _cell(row: dict[str, Any] | None, hd95: bool) -> str:
    if not _done(row):
        return "failed" if row and row.get("failed") else "not run"
    text = f"{row['dice']:.4f} ± {(row.get('dice_std') or 0):.4f}"
    if hd95 and row.get("hd95") is not None:
        text += f", HD95 {row['hd95']:.1f}"
    if row.get("wall_s") is not None:
        text += f" ({row['wall_s']:.0f} s)"
    n = len(row.get("seeds") or [])
    return text + (f" [{n} seed{'s' if n != 1 else ''}]" if n != 3 else "")


def paired_pairs(data: dict[str, tuple[Path, dict[str, Any]]], qw: bool, qar: bool) -> list[tuple[str, str, int, float]]:
    """``(setting, variant, seed, guided - base Dice)`` for every guided variant of one mechanism."""
    pairs = []
    for s, (_, res) in data.items():
        for variant, g in (res.get("guided_vs_base") or {}).items():
            if _parse(variant)[1:] != (qw, qar):
                continue
            for seed, diff in (g.get("per_seed") or {}).items():
                if diff is not None:
                    pairs.append((s, variant, int(seed), float(diff)))
    return pairs


def wilcoxon_line(name: str, pairs: list[tuple[str, str, int, float]]) -> str:
    """One table row: n pairs, mean and median difference, wins, Wilcoxon signed-rank statistic and p."""
    if not pairs:
        return f"| {name} | 0 | | | | | no pairs yet |"
    diffs = np.array([p[3] for p in pairs])
    wins = int((diffs > 0).sum())
    settings = sorted({p[0] for p in pairs}, key=SETTINGS.index)
    if len(diffs) < 2 or np.all(diffs == 0):
        test = "too few non-zero pairs"
    else:
        from scipy.stats import wilcoxon

        w = wilcoxon(diffs)  # two-sided, zero differences dropped (scipy's default "wilcox")
        test = f"W = {w.statistic:.1f}, p = {w.pvalue:.3g}"
    return (f"| {name} | {len(diffs)} | {diffs.mean():+.4f} | {np.median(diffs):+.4f} | {wins}/{len(diffs)} | "
            f"{', '.join(SETTING_TITLES[s] for s in settings)} | {test} |")


def best(methods: dict[str, Any], guided: bool) -> str | None:
    names = [v for v, r in methods.items() if _done(r) and any(_parse(v)[1:]) == guided]
    return max(names, key=lambda v: methods[v]["dice"]) if names else None


def report_lines(data: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """The generated block: every table of the study from the settings' results."""
    cols = [s for s in SETTINGS if s in data]
    lines = ["## Results (generated)", "",
             "Generated by `python benchmarks/study_report.py` from "
             + (", ".join(f"`benchmarks/results/{data[s][0].name}`" for s in cols) or "no result file yet") + "."]
    fallback = [s for s in cols if data[s][0].name.startswith("ssl_")]
    if fallback:
        lines += ["", "No `study_<setting>.json` yet for " + ", ".join(SETTING_TITLES[s] for s in fallback)
                  + ": their columns are read from the earlier grids `ssl_<setting>.json` (same protocol and "
                    "seeds, fewer variants)."]
    missing = [s for s in SETTINGS if s not in data]
    if missing:
        lines += ["", "Not run yet (no result file): " + ", ".join(SETTING_TITLES[s] for s in missing) + "."]
    if not cols:
        return lines
    lines += ["", "### Main table", "",
              ("Test Dice, mean ± std over seeds (3 unless marked), HD95 (px, volumes) for ACDC, wall seconds per "
              "run in brackets."), "",
              "| method | " + " | ".join(SETTING_TITLES[s] for s in cols) + " |", "|---|" + "---|" * len(cols)]
    extra = sorted({v for s in cols for v in data[s][1].get("methods", {})} - set(STUDY_METHODS))
    for v in STUDY_METHODS + extra:
        cells = [_cell(data[s][1].get("methods", {}).get(v), s.startswith("acdc")) for s in cols]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")

    lines += ["", "### Guided vs its own base (paired over seeds)", "",
              "Mean ± std of the per-seed difference guided - base in Dice, and the seeds the guided variant won.",
              "", "| guided variant | base | " + " | ".join(SETTING_TITLES[s] for s in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    guided = [v for v in STUDY_METHODS + extra if any(_parse(v)[1:])]
    for v in guided:
        cells, base = [], ""
        for s in cols:
            g = (data[s][1].get("guided_vs_base") or {}).get(v)
            if g and g.get("diff") is not None:
                base = g.get("base") or base
                cells.append(f"{g['diff']:+.4f} ± {(g.get('diff_std') or 0):.4f} ({g['wins']}/{g['n']})")
            else:
                cells.append("")
        if any(cells):
            lines.append(f"| {v} | {base} | " + " | ".join(cells) + " |")

    lines += ["", "### Paired test across seeds and settings", "",
              ("Wilcoxon signed-rank test (two-sided, `scipy.stats.wilcoxon`) over every (setting, guided variant, "
              "seed) pair of guided vs base test Dice, per mechanism. Pairs of different variants share their base "
              "runs, so they are not fully independent: read p as a guide, not a guarantee."), "",
              "| mechanism | pairs | mean diff | median diff | guided won | settings | test |",
              "|---|---|---|---|---|---|---|"]
    for name, (qw, qar) in MECHANISMS.items():
        lines.append(wilcoxon_line(name, paired_pairs(data, qw, qar)))

    lines += ["", "### Best guided vs best unguided", "",
              ("The issue's goal: the best guided variant beats the best unguided method on every setting by at "
              "least 1 Dice point on average over seeds."), "",
              "| setting | best unguided | best guided | difference | goal met |", "|---|---|---|---|---|"]
    for s in cols:
        methods = data[s][1].get("methods", {})
        bu, bg = best(methods, False), best(methods, True)
        if bu and bg:
            d = methods[bg]["dice"] - methods[bu]["dice"]
            lines.append(f"| {SETTING_TITLES[s]} | {bu} {methods[bu]['dice']:.4f} | {bg} {methods[bg]['dice']:.4f} | "
                         f"{d:+.4f} | {'yes' if d >= 0.01 else 'no'} |")
        else:
            lines.append(f"| {SETTING_TITLES[s]} | {bu or ''} | {bg or ''} | | not enough runs |")

    lines += ["", "### Not run yet", ""]
    for s in SETTINGS:
        if s not in data:
            lines.append(f"- {SETTING_TITLES[s]}: the whole grid (`python benchmarks/ssl_grid.py {s} --study`).")
            continue
        methods = data[s][1].get("methods", {})
        absent = [v for v in STUDY_METHODS if not _done(methods.get(v))]
        partial = [f"{v} ({len(methods[v].get('seeds') or [])}/3 seeds)" for v in STUDY_METHODS
                   if _done(methods.get(v)) and len(methods[v].get("seeds") or []) < 3]
        if absent or partial:
            lines.append(f"- {SETTING_TITLES[s]}: " + "; ".join(
                ([f"not run: {', '.join(absent)}"] if absent else []) + ([f"partial: {', '.join(partial)}"]
                                                                          if partial else [])) + ".")
    lines += [f"- {item}." for item in NOT_TABULATED]

    lines += ["", "### Commands behind each number", "",
              ("Each column comes from one `qgseg compare` grid (resumable: rerunning skips finished runs); the "
              "benchmark command wrote the result file at the commit shown."), ""]
    for s in cols:
        path, res = data[s]
        lines += [f"- {SETTING_TITLES[s]} (`{path.name}`, commit `{str(res.get('git_commit', '?'))[:7]}`):",
                  f"  `{res.get('command', '?')}`", f"  grid: `{res.get('compare_command', '?')}`"]
        if res.get("note"):
            lines.append(f"  note: {res['note']}")
    lines += ["- this report: `python benchmarks/study_report.py`"]
    return lines


def write_report(results: Path = RESULTS, out: Path = OUT) -> Path:
    """Replace the generated block of ``out`` (created from a template when absent) with the tables."""
    text = out.read_text() if out.is_file() else TEMPLATE
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    block = "\n".join(report_lines(load_settings(results)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(f"wrote {write_report(args.results, args.out)}", file=sys.stdout)


if __name__ == "__main__":
    main()
