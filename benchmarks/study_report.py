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
* how well the predictor g judged each guided run (its ``diagnostics``: validation predictions, the
  pseudolabel probe, the share -QW kept, QC of the test predictions);
* when their files exist in the results folder: the predictor backbones (``study_backbones_ph2.json``),
  the ablations (``study_ablations_ph2.json``, one table per axis) and the architectures
  (``study_architectures.json``), each with its plot when there is one;
* the protocol variants (``ssl_<setting>_<tag>.json``, a grid with one override such as fewer labels),
  each paired with the same variants of the setting's default protocol;
* the exact commands behind every number, and the parts of the study not run yet.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

# the variant grammar (METHOD[-qw][+qar], qar) of qgseg compare; importing it loads no torch
from qgseg.compare import _parse, base_of
from qgseg.data.io import DataError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_ablations as _ablation_axes  # noqa: E402
import ssl_grid as _grid  # noqa: E402
import study_architectures as _architecture_axis  # noqa: E402
from common import command_without_note, mean_std_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUT = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- study-report:begin -->", "<!-- study-report:end -->"

SETTINGS = ["ph2", "colondb", "acdc3", "acdc7"]
SETTING_TITLES = {"ph2": "PH2", "colondb": "CVC-ColonDB", "acdc3": "ACDC-3", "acdc7": "ACDC-7"}
# The issue's 13 variants per setting, in table order: the grid script's own default list.
STUDY_METHODS = _grid.METHODS.split(",")
# Issue 14's extra baselines, on PH2 only (one seed unless more fit).
PH2_EXTRAS = ["pl-t", "ua-mt", "ua-mt-qw", "ict", "ict-qw", "cl", "cl-qw"]
MECHANISMS = {"QW": (True, False), "QAR": (False, True), "QW+QAR": (True, True)}
# The same grids at the field's full size on GPUs (`ssl_grid.py --full-size`): study_<setting><suffix>.json.
FULL_SIZE = "_fullsize"
# The ablation grid of issue 14 (item 4): the values each axis of study_ablations_ph2.json should have,
# as benchmarks/study_ablations.py defines them.
ABLATION_VALUES = {axis: spec["values"] for axis, spec in _ablation_axes.AXES.items()}
BACKBONE_ORDER = ["resnet10", "resnet18", "resnet34"]
# The architecture axis of issue 14 (item 2): its settings and the networks beside the study grid's U-Net,
# as benchmarks/study_architectures.py defines them.
ARCHITECTURE_SETTINGS, ARCHITECTURES = list(_architecture_axis.SETTINGS), list(_architecture_axis.ARCH_OVERRIDES)
# Result files of the study's other axes, read from the results folder when present.
EXTRA_FILES = {"study_backbones_ph2.json": "Predictor backbones", "study_ablations_ph2.json": "Ablations",
               "study_architectures.json": "Architectures",
               "study_probe_hidden.json": "Pseudolabel probe on hidden labels"}
# Columns of the judge table: diagnostics keys shown in one cell, and what joins them.
JUDGE_CELLS = [(("g_mae_val", "g_spearman_val"), " / "), (("probe_g_mae", "probe_g_spearman"), " / "),
               (("probe_dice", "probe_dice_weighted"), " -> "), (("kept",), ""),
               (("qc_test_mae", "qc_test_spearman"), " / ")]
TEMPLATE = f"""# Benchmarks

Hand-written text goes outside the generated block below; `python benchmarks/study_report.py`
rewrites only the block.

{BEGIN}
{END}
"""


def load_settings(results: Path, suffix: str = "") -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{setting: (file, result)}`` from ``study_<s><suffix>.json``, else (no suffix) ``ssl_<s>.json``; absent
    settings left out."""
    found = {}
    for s in SETTINGS:
        for stem in (f"study_{s}{suffix}",) + ((f"ssl_{s}",) if not suffix else ()):
            path = results / f"{stem}.json"
            if path.is_file():
                found[s] = (path, read_result(path))
                break
    return found


def read_result(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file, DataError when it is not valid JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:  # e.g. a result file caught half written
        raise DataError(f"not a valid JSON result file ({err})", path) from err


def _done(row: dict[str, Any] | None) -> bool:
    return bool(row) and row.get("dice") is not None


def _cell(row: dict[str, Any] | None, hd95: bool, all_seeds: bool = False) -> str:
    """Dice ± std (no std when the file has none, e.g. one seed), HD95, wall s, and the seeds when not 3
    (always when ``all_seeds``)."""
    if not _done(row):
        return "failed" if row and row.get("failed") else "not run"
    text = f"{row['dice']:.4f}" + (f" ± {row['dice_std']:.4f}" if row.get("dice_std") is not None else "")
    if hd95 and row.get("hd95") is not None:
        text += f", HD95 {row['hd95']:.1f}"
    if row.get("wall_s") is not None:
        text += f" ({row['wall_s']:.0f} s)"
    n = len(row.get("seeds") or row.get("per_seed") or [])
    return text + (f" [{n} seed{'s' if n != 1 else ''}]" if n != 3 or all_seeds else "")


def _seed0(row: dict[str, Any] | None) -> str:
    """A multi-seed row's seed-0 value: the one-seed points of an ablation compare to it, paired."""
    per_seed = (row or {}).get("per_seed") or {}
    return f"; seed 0: {per_seed['0']:.4f}" if len(per_seed) > 1 and "0" in per_seed else ""


def _numbers(values: dict[str, Any], keys: tuple[str, ...], sep: str = " / ", fmt: str = ".3f") -> str:
    """``values[k]`` for ``keys`` joined by ``sep``; empty when none is there, "n/a" for a missing one."""
    if all(values.get(k) is None for k in keys):
        return ""
    return sep.join(format(values[k], fmt) if values.get(k) is not None else "n/a" for k in keys)


def _seed_list(seeds: Any) -> list[str]:
    """Seeds written as a list or as the command line's comma-separated string."""
    if isinstance(seeds, str):
        return [s.strip() for s in seeds.split(",") if s.strip()]
    return [str(s) for s in seeds or []]


def _same(a: Any, b: Any) -> bool:
    """Axis values compared as numbers when both are (0.1 from JSON equals 0.1 in ABLATION_VALUES)."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


def _plot(results: Path, name: str, alt: str) -> list[str]:
    """A markdown link to ``results/name`` from docs/, when the plot exists."""
    return [f"![{alt}](../benchmarks/results/{name})", ""] if (results / name).is_file() else []


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


def _goal(diff: float, seeds: int) -> str:
    """The goal cell: met at +1 point; provisional while either side has fewer than the 3 seeds the goal
    is defined on."""
    verdict = "yes" if diff >= 0.01 else "no"
    return verdict if seeds >= 3 else f"{verdict} (provisional: {seeds} seed{'s' * (seeds > 1)})"


def best(methods: dict[str, Any], guided: bool) -> str | None:
    names = [v for v, r in methods.items() if _done(r) and any(_parse(v)[1:]) == guided]
    return max(names, key=lambda v: methods[v]["dice"]) if names else None


def _order(variants: Any) -> list[str]:
    """Variants in the study's table order, others after them by name."""
    return sorted(set(variants), key=lambda v: (STUDY_METHODS.index(v) if v in STUDY_METHODS else len(STUDY_METHODS), v))


def _value(v: Any) -> str:
    return format(v, "g") if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _value_key(v: Any) -> tuple[float, str]:
    try:
        return float(v), ""
    except (TypeError, ValueError):
        return math.inf, str(v)


def judge_lines(data: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """How well g judged each guided run: one row per (setting, guided variant) with ``diagnostics``."""
    rows = []
    for s, (_, res) in data.items():
        methods = res.get("methods", {})
        for v in _order(methods):
            diag = (methods[v] or {}).get("diagnostics")
            if diag and any(_parse(v)[1:]):
                rows.append(f"| {SETTING_TITLES[s]} | {v} | "
                            + " | ".join(_numbers(diag, keys, sep) for keys, sep in JUDGE_CELLS) + " |")
    if not rows:
        return []
    return ["", "### Does the predictor judge the students?", "",
            ("g's MAE / Spearman against the true Dice of the student's validation predictions; then the probe: at "
             "each validation the method's pseudolabel network (the teacher of MT / BCP, CPS's other network, otherwise the "
             "student) segments up to 16 labeled cases as if they were unlabeled and g scores those pseudolabels "
             "(MAE / Spearman against their true Dice; their mean true Dice plain -> weighted by -QW's weights); "
             "the share of pseudolabel weights -QW kept in training; g's QC of the final model's test predictions. "
             "Values are means over a run's validations, then over seeds."),
            "", "The probe columns exist only for runs trained after commit 5dc5827 (empty otherwise).", "",
            ("| setting | variant | g on validation MAE / Spearman | g on pseudolabels MAE / Spearman | "
             "pseudolabel Dice plain -> -QW-weighted | kept | QC of test MAE / Spearman |"),
            "|---|---|---|---|---|---|---|", *rows]


def _mean_of(values: list[Any]) -> float | None:
    """Mean of the values that are numbers (not None or NaN), None when there are none."""
    nums = [float(v) for v in values if v is not None and v == v]
    return float(np.mean(nums)) if nums else None


def probe_gain_pairs(data: dict[str, tuple[Path, dict[str, Any]]],
                     res: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(setting, selection gain of g's ranking on the run's unlabeled pseudolabels, test-Dice gain over its
    base) for every -QW run probed on hidden labels; selection gain: the best half by g's mean true Dice
    minus the plain mean true Dice."""
    pairs = []
    for setting, (_, st) in data.items():
        probed = res.get("grids", {}).get(Path(str(st.get("grid", ""))).name, {}).get("runs", {})
        for v, g in (st.get("guided_vs_base") or {}).items():
            if not _parse(v)[1]:  # -QW variants only: the ones whose weights come from this ranking
                continue
            for seed, gain in (g.get("per_seed") or {}).items():
                hid = (probed.get(f"{v}_s{seed}") or {}).get("hidden", {})
                if hid.get("probe_dice_top_half") is not None and gain is not None:
                    pairs.append((setting, hid["probe_dice_top_half"] - hid["probe_dice"], float(gain)))
    return pairs


def hidden_probe_lines(res: dict[str, Any] | None,
                       data: dict[str, tuple[Path, dict[str, Any]]] | None = None) -> list[str]:
    """The unbiased probe (``study_probe_hidden.py``): g on the pseudolabels of unlabeled training cases,
    against their hidden labels, beside the same probe on labeled cases; one row per grid and variant
    (mean over the seeds probed)."""
    if not res:
        return []
    rows = []
    for grid, g in res.get("grids", {}).items():
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for r in g.get("runs", {}).values():
            by_variant.setdefault(r["variant"], []).append(r)
        for v in _order(by_variant):
            runs = by_variant[v]
            mean = {part: {k: _mean_of([r[part].get(k) for r in runs]) for k in {k for r in runs for k in r[part]}}
                    for part in ("labeled", "hidden")}
            lab, hid = mean["labeled"], mean["hidden"]
            kept = "-" if hid.get("probe_kept") is None else f"{hid['probe_kept']:.0%}"
            rows.append(f"| {grid} | {v} | {len(runs)} | {_numbers(lab, ('probe_g_mae', 'probe_g_spearman'))} | "
                        f"{_numbers(lab, ('probe_dice',))} | {_numbers(hid, ('probe_g_mae', 'probe_g_spearman'))} | "
                        f"{_numbers(hid, ('probe_dice', 'probe_dice_weighted'), ' -> ')} | {kept} | "
                        f"{_numbers(hid, ('probe_dice_top_half', 'probe_dice_oracle_half'))} |")
    if not rows:
        return []
    return ["", "### The probe on unlabeled cases (hidden labels)", "",
            ("The probe above scores pseudolabels of *labeled* cases, which the networks trained on. ACDC and "
             "CVC-ColonDB keep the labels of their unlabeled training cases on disk (the runs never read them): "
             "`benchmarks/study_probe_hidden.py` reads them after training, from each run's last checkpoint, "
             "and scores the pseudolabel network's masks of up to "
             f"{max((r.get('n_hidden', 0) for g in res['grids'].values() for r in g['runs'].values()), default=0)} "
             "unlabeled cases (slices for ACDC) with g (the run's own; the grid's predictor for unguided runs). "
             "Unguided variants show what -QW would have kept. The last column: the mean true Dice of the half "
             "of the unlabeled pseudolabels g rates highest / of the half that truly is best (g's ranking, "
             "whatever its calibration, against a perfect one)."), "",
            ("| grid | variant | seeds | labeled: g MAE / Spearman | labeled: pseudolabel Dice | "
             "unlabeled: g MAE / Spearman | unlabeled: Dice plain -> -QW-weighted | kept | "
             "unlabeled: best half by g / truly best half |"),
            "|---|---|---|---|---|---|---|---|---|", *rows] + probe_gain_lines(data or {}, res)


def probe_gain_lines(data: dict[str, tuple[Path, dict[str, Any]]], res: dict[str, Any]) -> list[str]:
    """Does -QW gain where g's ranking selects the unlabeled pseudolabels well? A rank correlation over the
    probed -QW runs (:func:`probe_gain_pairs`)."""
    from scipy.stats import spearmanr

    pairs = probe_gain_pairs(data, res)
    if len(pairs) < 4:
        return []

    def corr(rows: list[tuple[str, float, float]]) -> str:
        rho, p = spearmanr([r[1] for r in rows], [r[2] for r in rows])
        return f"rho = {rho:.2f} (p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}, {len(rows)} runs)"

    sel = [r[1] for r in pairs]
    per_setting = [f"{SETTING_TITLES.get(k, k)} {corr(rows)}" for k in dict.fromkeys(r[0] for r in pairs)
                   if len(rows := [r for r in pairs if r[0] == k]) >= 4]
    return ["", (f"Over the probed (setting, -QW variant, seed) runs, the test-Dice gain of -QW over its base and the "
                 f"selection gain of g's ranking on that run's unlabeled pseudolabels (best half by g minus the plain "
                 f"mean: {min(sel):+.3f} to {max(sel):+.3f}) have Spearman {corr(pairs)}"
                 + (f"; within a setting: {'; '.join(per_setting)}" if per_setting else "") + ". "
                 "The probe reads the guided run's own final pseudolabels, after training: an explanation of the "
                 "outcome, not a prediction made before it.")]


def predictor_lines(data: dict[str, tuple[Path, dict[str, Any]]], results: Path) -> list[str]:
    """Each setting's quality predictor: its phase-1 accuracy on synthetic masks of the test images, its
    QC of the final models' test predictions (mean over variants), and the predicted-vs-true figure."""
    rows, figures = [], []
    for s, (_, res) in data.items():
        syn = ((res.get("predictor_eval") or {}).get("synthetic")) or {}
        qc = [(m.get("diagnostics") or {}) for m in (res.get("methods") or {}).values() if _done(m)]
        mae = [d["qc_test_mae"] for d in qc if "qc_test_mae" in d]
        rho = [d["qc_test_spearman"] for d in qc if "qc_test_spearman" in d]
        fmt = lambda vals: f"{np.mean(vals):.3f} (range {min(vals):.3f}-{max(vals):.3f})" if vals else ""  # noqa: E731
        synthetic = f"{syn['mae']:.3f} / {syn['spearman']:.3f}" if syn.get("mae") is not None else ""
        rows.append(f"| {SETTING_TITLES[s]} | `{res.get('predictor') or ''}` | {synthetic} | {fmt(mae)} | {fmt(rho)} "
                    f"| {len(mae)} |")
        figures += _plot(results, f"study_{s}_figures/qc_predicted_vs_true.png", f"{SETTING_TITLES[s]}: predicted vs "
                         "true Dice of the test predictions")
    if not rows:
        return []
    return ["", "### The quality predictor of each setting", "",
            ("Trained in phase 1 on the setting's labeled cases only. Synthetic: MAE / Spearman on corrupted masks of "
             "the test images (phase-1 evaluation). QC: g's predicted Dice of each final model's test predictions "
             "against their true Dice, per variant, then the mean and range over the variants. Accuracy on fixed "
             "masks and unseen networks per dataset: [quality.md](quality.md)."), "",
            "| setting | predictor | synthetic MAE / Spearman | QC MAE on test predictions | QC Spearman | variants |",
            "|---|---|---|---|---|---|", *rows, "", *figures]


def _guided_dice(row: dict[str, Any] | None) -> str:
    """Mean ± std (ddof 1) over the row's seeds, and its wall per run when known; n/a without runs."""
    vals = [float(v) for v in ((row or {}).get("per_seed") or {}).values()]
    if not vals:
        return _numbers(row or {}, ("dice",), fmt=".4f")
    return mean_std_text(vals) + (f" ({row['wall_s']:.0f} s)" if row.get("wall_s") is not None else "")


def backbone_lines(res: dict[str, Any] | None, results: Path) -> list[str]:
    """The predictor backbones table of ``study_backbones_ph2.json`` (nothing when absent)."""
    if not res:
        return []
    backbones = res.get("backbones") or {}
    names = [b for b in BACKBONE_ORDER if b in backbones] + sorted(set(backbones) - set(BACKBONE_ORDER))
    lines = ["", "### Predictor backbones (PH2)", "",
             ("Phase-1 predictor per backbone: its accuracy on the fixed PH2 test masks (MAE, Spearman, AUROC of "
              "flagging Dice < 0.7) and on synthetic masks of the test images, and the test Dice of MT-QW and QAR "
              "guided by it (mean ± std over seeds, wall s per run)."), "",
             *_plot(results, "study_backbones_ph2.png", "predictor backbones"),
             ("| backbone | fixed test masks MAE / Spearman / AUROC(0.7) | synthetic MAE / Spearman | "
              "MT-QW Dice (s/run) | QAR Dice (s/run) | seeds |"), "|---|---|---|---|---|---|"]
    for b in names:
        r = backbones[b]
        seeds = sorted({k for m in ("mt-qw", "qar") for k in ((r.get(m) or {}).get("per_seed") or {})},
                       key=lambda k: (len(k), k)) or _seed_list(res.get("seeds"))
        lines.append(f"| {b} | {_numbers(r, ('fixed_mae', 'fixed_spearman', 'fixed_auroc_0.7'))} | "
                     f"{_numbers(r, ('synthetic_mae', 'synthetic_spearman'))} | "
                     f"{_guided_dice(r.get('mt-qw'))} | {_guided_dice(r.get('qar'))} | {', '.join(seeds)} |")
    # seeds guided by an earlier (lost, then retrained) predictor: its accuracy differs from the one shown
    notes = [f"- {b}: seed(s) {', '.join(map(str, c['seeds']))} were guided by the earlier predictor of this backbone "
             f"(fixed test masks MAE {c['fixed_mae']:.4f} / Spearman {c['fixed_spearman']:.3f}); the row shows the "
             "retrained one that guided the others." for b in names if (c := backbones[b].get("carried_predictor"))]
    return lines + (["", *notes] if notes else [])


def ablation_lines(res: dict[str, Any] | None, results: Path) -> list[str]:
    """One table per axis of ``study_ablations_ph2.json`` (nothing when absent)."""
    if not res:
        return []
    lines = ["", "### Ablations (PH2)", "",
             ("One setting changed at a time from the PH2 protocol; test Dice ± std over seeds [seeds] (the default "
              "point also gives its seed 0, to which the one-seed points compare, paired), and the "
              "phase-1 predictor's MAE / Spearman on the fixed PH2 test masks where the axis retrains it."), "",
             *_plot(results, "study_ablations_ph2.png", "ablations")]
    for axis, a in (res.get("axes") or {}).items():
        rows = a.get("rows") or []
        lines += [f"#### {a.get('title') or axis}", "",
                  f"`{a.get('key', '?')}` on {a.get('variant', '?')}, default {_value(a.get('default'))}.", ""]
        if not rows:
            lines += ["not run yet", ""]
            continue
        methods = _order(m for r in rows for m in (r.get("methods") or {}))
        predictor = any(r.get("predictor") for r in rows)
        lines += ["| value | " + " | ".join(methods) + (" | predictor MAE / Spearman |" if predictor else " |"),
                  "|---|" + "---|" * (len(methods) + predictor)]
        for r in sorted(rows, key=lambda r: _value_key(r.get("value"))):
            cells = [_cell((r.get("methods") or {}).get(m), False, all_seeds=True) + _seed0((r.get("methods") or {}).get(m))
                     for m in methods]
            if predictor:
                cells.append(_numbers(r.get("predictor") or {}, ("fixed_mae", "fixed_spearman")))
            label = _value(r.get("value")) + (" (default)" if _same(r.get("value"), a.get("default")) else "")
            label += f" ({r['note']})" if r.get("note") else ""
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines[:-1] if lines[-1] == "" else lines


def ablations_missing(res: dict[str, Any]) -> dict[str, list[Any]]:
    """``{axis: values not run}``: an axis of the file is matched to ABLATION_VALUES by key or title, and
    its own ``values`` list, when it has one, is what it should cover; an axis without rows is listed
    (with no values when none is known) and so is an axis of ABLATION_VALUES the file lacks."""
    def names(key: str, a: dict[str, Any]) -> set[str]:
        return {str(n).strip().lower().replace(" ", "_") for n in (key, a.get("title")) if n}

    axes = res.get("axes") or {}
    missing = {}
    for key, a in axes.items():
        known = sorted(names(key, a) & set(ABLATION_VALUES))
        values = a.get("values") or (ABLATION_VALUES[known[0]] if known else [])
        rows = a.get("rows") or []
        left = [v for v in values if not any(_same(v, r.get("value")) for r in rows)]
        if left or not rows:
            missing[known[0] if known else (a.get("title") or key)] = left
    for axis, values in ABLATION_VALUES.items():
        if not any(axis in names(key, a) for key, a in axes.items()):
            missing[axis] = list(values)
    return missing


def architecture_lines(res: dict[str, Any] | None, results: Path) -> list[str]:
    """One table per setting of ``study_architectures.json`` (nothing when absent)."""
    if not res:
        return []
    lines = ["", "### Architectures", "",
             ("Segmentation network per row (same protocol otherwise): test Dice ± std over seeds, and each guided "
              "variant's difference to its own base method."), "", *_plot(results, "study_architectures.png", "architectures")]
    lines = lines[:-1] if lines[-1] == "" else lines
    for s, archs in (res.get("settings") or {}).items():
        methods = _order(m for row in archs.values() for m in row)
        guided = [m for m in methods if base_of(m) in methods]
        lines += ["", f"#### {SETTING_TITLES.get(s, s)}", "",
                  "| architecture | " + " | ".join(methods) + " | guided - base |", "|---|" + "---|" * (len(methods) + 1)]
        for arch, row in archs.items():
            diffs = [f"{m} {row[m]['dice'] - row[base_of(m)]['dice']:+.4f}" for m in guided
                     if _done(row.get(m)) and _done(row.get(base_of(m)))]
            lines.append(f"| {arch} | " + " | ".join(_cell(row.get(m), s.startswith("acdc")) for m in methods)
                         + f" | {'; '.join(diffs)} |")
    return lines


def protocol_overrides(res: dict[str, Any]) -> list[str]:
    """The ``--set`` overrides that make a grid a variant of its setting's protocol: the result's own
    ``overrides`` key, else (results written before it existed) the list its protocol string ends with."""
    if res.get("overrides") is not None:
        return list(res["overrides"])
    found = re.search(r"overrides \[(.*)\]$", str(res.get("protocol", "")))
    return re.findall(r"'([^']*)'", found.group(1)) if found else []


def variant_files(results: Path) -> dict[str, dict[str, Any]]:
    """``{file name: result}`` of the grids run as variants of a setting's protocol (``ssl_grid.py <setting>
    --tag <tag>`` writes ``ssl_<setting>_<tag>.json``); the full-size study grids have their own section."""
    out = {}
    for s in SETTINGS:
        for path in sorted(results.glob(f"ssl_{s}_*.json")):
            if (res := read_result(path)) and res.get("methods"):
                out[path.name] = res
    return out


def common_seed_diff(row: dict[str, Any] | None, other: dict[str, Any] | None) -> tuple[float, list[str]] | None:
    """Mean of ``row`` - ``other`` over the seeds both have, and those seeds; None when they share none."""
    a, b = (row or {}).get("per_seed") or {}, (other or {}).get("per_seed") or {}
    both = sorted(set(a) & set(b), key=int)
    return (float(np.mean([a[k] - b[k] for k in both])), both) if both else None


def _paired_diff(row: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    """``row`` - ``other`` over the seeds both have, with the seeds; empty when they share none."""
    found = common_seed_diff(row, other)
    return f"{found[0]:+.4f} (seeds {', '.join(found[1])})" if found else ""


def variant_lines(results: Path, data: dict[str, tuple[Path, dict[str, Any]]] | None = None) -> list[str]:
    """One table per protocol variant: Dice of each variant over its seeds, each guided variant's paired
    difference to its base in that grid and to the same variant of the setting's study (the default
    protocol, from ``data``), and the result's note (what it was run for)."""
    files = variant_files(results)
    if not files:
        return []
    lines = ["", "### Protocol variants", "",
             ("Grids run with one setting's protocol changed by the overrides shown (`benchmarks/ssl_grid.py "
              "<setting> --tag <tag> --set ...`), to test one explanation of the main table. Test Dice ± std "
              "over the seeds in brackets; guided - base is paired over the seeds both have.")]
    for name, res in files.items():
        methods = res["methods"]
        seeds = sorted({int(k) for row in methods.values() for k in (row or {}).get("per_seed", {})})
        overrides = ", ".join(f"`{o}`" for o in protocol_overrides(res)) or "none"
        setting = str(res.get("setting") or name.split("_")[1])
        study_file, study = (data or {}).get(setting, (None, {}))
        default = (study or {}).get("methods") or {}
        lines += ["", f"#### `{name}` (overrides {overrides}; seeds {', '.join(map(str, seeds))})", "",
                  f"| variant | Dice | guided - base (seeds won) | vs the default protocol, paired"
                  f"{f' (`{study_file.name}`)' if study_file else ''} |", "|---|---|---|---|"]
        for m in _order(methods):
            g = (res.get("guided_vs_base") or {}).get(m)
            diff = (f"{g['diff']:+.4f} vs {g['base']} ({g['wins']}/{g['n']})" if g and g.get("diff") is not None
                    else "")
            lines.append(f"| {m} | {_cell(methods[m], setting.startswith('acdc'), all_seeds=True)} | {diff} | "
                         f"{_paired_diff(methods[m], default.get(m))} |")
        if q := ((res.get("predictor_eval") or {}).get("synthetic") or {}):
            lines += ["", f"Its predictor (trained on that grid's labeled cases only): synthetic-mask MAE "
                          f"{q.get('mae', float('nan')):.3f} / Spearman {q.get('spearman', float('nan')):.2f}."]
        if res.get("note"):
            lines += ["", f"Note: {res['note']}"]
    return lines


def architectures_missing(res: dict[str, Any]) -> list[str]:
    """Per setting of the architecture axis: the networks not run, and those with fewer than 3 seeds or
    without all three of SUP, the best unguided method and its guided variant."""
    out = []
    settings = res.get("settings") or {}
    for s in ARCHITECTURE_SETTINGS:
        archs = settings.get(s) or {}
        parts = []
        for arch in ARCHITECTURES:
            rows = {m: r for m, r in (archs.get(arch) or {}).items() if _done(r)}
            if not rows:
                parts.append(f"{arch} not run")
                continue
            seeds = min(len(r.get("seeds") or []) for r in rows.values())
            short = [f"{len(rows)}/3 methods"] if len(rows) < 3 else []
            short += [f"{seeds}/3 seeds"] if seeds < 3 else []
            if short:
                parts.append(f"{arch} {', '.join(short)}")
        if parts:
            out.append(f"{SETTING_TITLES[s]}: {', '.join(parts)}")
    return out


def not_tabulated(results: Path, backbones: dict[str, Any] | None, ablations: dict[str, Any] | None,
                  architectures: dict[str, Any] | None) -> list[str]:
    """The parts of issue 14 beyond the settings' grids that the result files do not cover yet."""
    items = []
    if architectures is None:
        items.append("architectures (U-Net, U-Net++, Attention U-Net, SwinUNETR 2D) on PH2 and ACDC-3")
    elif missing := architectures_missing(architectures):
        items.append("architectures: " + "; ".join(missing))
    if backbones is None:
        items.append("predictor backbones (ResNet-10/18/34, a non-ResNet MONAI backbone) on PH2")
    elif len(seeds := _seed_list(backbones.get("seeds"))) < 3:
        items.append(f"predictor backbones: more seeds (seeds {', '.join(seeds) or 'none'} so far)")
    if ablations is None:
        items.append("ablations on PH2: lambda_qar, -QW power T and threshold tau, masks per image K, share of "
                     "weak-network masks, unlabeled pool size")
    elif missing := ablations_missing(ablations):
        items.append("ablations on PH2, values not run: " + "; ".join(
            f"{axis} {', '.join(_value(v) for v in values)}" if values else f"{axis} (no rows)"
            for axis, values in missing.items()))
    no_figures = [SETTING_TITLES[s] for s in SETTINGS if not (results / f"study_{s}_figures").is_dir()]
    if no_figures:
        items.append("overlays of the test cases where guidance changed the result most "
                     "(`benchmarks/study_overlays.py`): " + ", ".join(no_figures))
    no_plot = [title for title, res, png in (("predictor backbones", backbones, "study_backbones_ph2.png"),
                                             ("ablations", ablations, "study_ablations_ph2.png"),
                                             ("architectures", architectures, "study_architectures.png"))
               if res is not None and not (results / png).is_file()]
    if no_plot:
        many = len(no_plot) > 1
        items.append(f"plot{'s' * many} of the " + " and ".join(filter(None, [", ".join(no_plot[:-1]), no_plot[-1]]))
                     + f" table{'s' * many}")
    full_size = load_settings(results, FULL_SIZE)
    if no_gpu := [s for s in SETTINGS if s not in full_size]:
        items.append("the same grid at full size on a GPU: " + ", ".join(SETTING_TITLES[s] for s in no_gpu)
                     + " (prepared: `python benchmarks/ssl_grid.py <setting> --study --full-size --jobs 16`)")
    return items


def best_vs_best_table(data: dict[str, tuple[Path, dict[str, Any]]]) -> list[str]:
    """A table with one row per setting: its best unguided and best guided variant, their difference, the goal."""
    lines = ["| setting | best unguided | best guided | difference | goal met | on common seeds |",
             "|---|---|---|---|---|---|"]
    for s in [s for s in SETTINGS if s in data]:
        methods = data[s][1].get("methods", {})
        bu, bg = best(methods, False), best(methods, True)
        if bu and bg:
            d = methods[bg]["dice"] - methods[bu]["dice"]
            pu, pg = (methods[v].get("per_seed") or {} for v in (bu, bg))
            paired = ""
            if set(pu) != set(pg) and (found := common_seed_diff(methods[bg], methods[bu])):
                du, common = found
                paired = f"{du:+.4f} on seed{'s' * (len(common) > 1)} {', '.join(common)}"
            lines.append(f"| {SETTING_TITLES[s]} | {bu} {methods[bu]['dice']:.4f} ({len(pu)}) | {bg} "
                         f"{methods[bg]['dice']:.4f} ({len(pg)}) | {d:+.4f} | {_goal(d, min(len(pu), len(pg)))} | "
                         f"{paired} |")
        else:
            lines.append(f"| {SETTING_TITLES[s]} | {bu or ''} | {bg or ''} | | not enough runs | |")
    return lines


def report_lines(data: dict[str, tuple[Path, dict[str, Any]]], results: Path | None = None) -> list[str]:
    """The generated block: every table of the study from the settings' results, and the backbone,
    ablation and architecture files of ``results`` (default: the folder of the settings' files)."""
    cols = [s for s in SETTINGS if s in data]
    results = results or (next(iter(data.values()))[0].parent if data else RESULTS)
    extra_files = {name: read_result(results / name) for name in EXTRA_FILES}
    backbones, ablations, architectures, hidden_probe = extra_files.values()
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
                std = "" if g.get("diff_std") is None else f" ± {g['diff_std']:.4f}"
                cells.append(f"{g['diff']:+.4f}{std} ({g['wins']}/{g['n']})")
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
              "least 1 Dice point on average over seeds. Seeds in brackets; where the two were run on different "
              "seeds, the last column compares them on the seeds both have (a mean over fewer seeds is noisier, "
              "and the best of many such means is biased upwards)."), ""]
    lines += best_vs_best_table(data)
    if full_size := load_settings(results, FULL_SIZE):
        lines += ["", "### Full size on a GPU", "",
                  ("The same grids at the field's full size (each preset's `# GPU:` sizes, `benchmarks/ssl_grid.py "
                   "--full-size`); the full tables are in " + ", ".join(f"`{p.with_suffix('.md').name}`"
                                                                       for p, _ in full_size.values()) + "."), ""]
        lines += best_vs_best_table(full_size)
    lines += predictor_lines(data, results) + judge_lines(data) + hidden_probe_lines(hidden_probe, data)
    lines += backbone_lines(backbones, results)
    lines += ablation_lines(ablations, results)
    lines += architecture_lines(architectures, results)
    lines += variant_lines(results, data)

    lines += ["", "### Not run yet", ""]
    for s in SETTINGS:
        if s not in data:
            lines.append(f"- {SETTING_TITLES[s]}: the whole grid (`python benchmarks/ssl_grid.py {s} --study`).")
            continue
        methods = data[s][1].get("methods", {})
        # the 13th variant is QAR on top of the setting's best -QW: any "<method>-qw+qar" fills that slot
        own = [v for v in methods if v.endswith("-qw+qar") and _done(methods.get(v))]
        expected = [own[0] if v == "mt-qw+qar" and own else v for v in STUDY_METHODS]
        extras = PH2_EXTRAS if s == "ph2" else []
        absent = [v for v in expected + extras if not _done(methods.get(v))]
        partial = [f"{v} ({len(methods[v].get('seeds') or [])}/3 seeds)" for v in expected + extras
                   if _done(methods.get(v)) and len(methods[v].get("seeds") or []) < 3]
        if absent or partial:
            lines.append(f"- {SETTING_TITLES[s]}: " + "; ".join(
                ([f"not run: {', '.join(absent)}"] if absent else []) + ([f"partial: {', '.join(partial)}"]
                                                                          if partial else [])) + ".")
    lines += [f"- {item}." for item in not_tabulated(results, backbones, ablations, architectures)]

    lines += ["", "### Commands behind each number", "",
              ("Each column comes from one `qgseg compare` grid (resumable: rerunning skips finished runs); the "
              "benchmark command wrote the result file at the commit shown."), ""]
    for s in cols:
        path, res = data[s]
        command, *note = command_lines(res)
        lines += [f"- {SETTING_TITLES[s]} (`{path.name}`, commit `{str(res.get('git_commit', '?'))[:7]}`):",
                  command, f"  grid: `{res.get('compare_command', '?')}`", *note]
    for name, res in extra_files.items():
        if res:
            lines += [f"- {EXTRA_FILES[name]} (`{name}`, commit `{str(res.get('git_commit', '?'))[:7]}`):",
                      *command_lines(res)]
    for name, res in variant_files(results).items():  # their notes are in their own section
        lines += [f"- Protocol variant (`{name}`, commit `{str(res.get('git_commit', '?'))[:7]}`):",
                  f"  `{command_without_note(str(res.get('command', '?')), res.get('note'))}`"]
    lines += ["- this report: `python benchmarks/study_report.py`"]
    return lines


def command_lines(res: dict[str, Any]) -> list[str]:
    """The result's command and, when it has one, its note: the note once, not again inside the command
    (``--note`` carries the whole note, often a paragraph, so the command points to it instead)."""
    command, note = str(res.get("command", "?")), res.get("note")
    return [f"  `{command_without_note(command, note)}`"] + ([f"  note: {note}"] if note else [])


def write_report(results: Path = RESULTS, out: Path = OUT) -> Path:
    """Replace the generated block of ``out`` (created from a template when absent) with the tables."""
    text = out.read_text() if out.is_file() else TEMPLATE
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    block = "\n".join(report_lines(load_settings(results), results))
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
