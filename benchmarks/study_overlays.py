"""Figures of a ``qgseg compare`` grid: where guidance changed the test result most, and how well
the quality predictor judged each final model's test predictions.

    python benchmarks/study_overlays.py runs/bench/ssl_ph2_grid --out benchmarks/results/study_ph2_figures

The grid is only read (runs still being written are fine: a run counts once it has its
``result.json``). Writes into ``--out``:

* ``overlays/<guided>_vs_<base>_{helped,hurt}_<rank>_<case>.jpg``: for each guided variant and its
  own unguided method (``mt-qw`` vs ``mt``, ``qar`` vs ``sup``; :func:`qgseg.compare.find_base`),
  the ``--top`` test cases whose per-case Dice rose most and fell most with guidance (paired by
  seed, mean over the seeds both have). Panels: image | truth | base prediction | guided
  prediction, truth outlined in green and predictions in magenta (one colour pair per class). The seed shown is the one whose
  difference on that case is the median over seeds; its two best checkpoints predict that case
  again (a volume shows the slice where the two predictions differ most).
* ``qc_predicted_vs_true.png``: per variant, the quality predictor's predicted Dice of the test
  predictions (``qc/qc.csv``, every seed and class) against their true Dice, MAE and Spearman in
  the titles.
* ``summary.json`` and ``README.md`` listing every image and the numbers behind it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, git_commit

from qgseg.compare import RESULT_FILE, find_base, is_guided
from qgseg.data.io import DataError

QC_FILE = Path("qc") / "qc.csv"
PER_CASE_FILE = Path("segmenter") / "eval" / "test_per_case.csv"
CKPT_FILE = Path("segmenter") / "checkpoints" / "best.ckpt"
CONFIG_FILE = Path("segmenter") / "config.yaml"
PRED_PREFIX, TRUE_PREFIX = "predicted_dice_", "true_dice_"


# ----------------------------------------------------------------------------- reading a grid (pure)
def discover_runs(grid: Path) -> dict[tuple[str, int], Path]:
    """Finished runs of ``grid`` (``runs/<variant>_s<seed>/`` with a ``result.json``) keyed by (variant, seed)."""
    runs_dir = grid / "runs"
    if not runs_dir.is_dir():
        raise DataError("not a qgseg compare grid (no runs/ folder)", grid)
    found: dict[tuple[str, int], Path] = {}
    for run in sorted(runs_dir.iterdir()):
        variant, sep, seed = run.name.rpartition("_s")
        if sep and seed.isdigit() and (run / RESULT_FILE).is_file():
            found[(variant, int(seed))] = run
    if not found:
        raise DataError("no finished run (runs/<variant>_s<seed>/result.json) in this grid", runs_dir)
    return found


def grid_variants(grid: Path, runs: Iterable[tuple[str, int]]) -> list[str]:
    """Variants in the order of the grid's ``comparison.json`` when it has one, then any others."""
    present = list(dict.fromkeys(v for v, _ in runs))
    listed: list[str] = []
    comparison = grid / "comparison.json"
    if comparison.is_file():
        try:
            listed = list(json.loads(comparison.read_text()).get("variants", []))
        except json.JSONDecodeError as exc:
            raise DataError(f"unreadable JSON ({exc})", comparison) from None
    return [v for v in listed if v in present] + [v for v in present if v not in listed]


def _read_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """CSV rows of ``path``; DataError naming the file when it is missing or lacks a column."""
    if not path.is_file():
        raise DataError("missing file", path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"no column(s) {missing} (columns: {reader.fieldnames})", path)
        return list(reader)


def read_per_case(path: Path) -> dict[str, float]:
    """Per-case test Dice from ``test_per_case.csv``: the mean over the foreground classes of each
    case (the run's ``mean_foreground`` Dice), classes whose Dice is undefined (nan) left out."""
    per_class: dict[str, list[float]] = {}
    for row in _read_rows(path, ("case_id", "dice")):
        per_class.setdefault(row["case_id"], []).append(float(row["dice"]))
    return {c: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for c, v in per_class.items()}


def read_qc(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) Dice of every (case, class) of a run's ``qc/qc.csv``, flattened."""
    rows = _read_rows(path, ("case_id",))
    classes = [c[len(PRED_PREFIX):] for c in rows[0] if c.startswith(PRED_PREFIX)] if rows else []
    if rows and (not classes or any(TRUE_PREFIX + c not in rows[0] for c in classes)):
        raise DataError(f"needs {PRED_PREFIX}<class> and {TRUE_PREFIX}<class> columns", path)
    pred = np.array([[float(r[PRED_PREFIX + c]) for c in classes] for r in rows], dtype=float).ravel()
    true = np.array([[float(r[TRUE_PREFIX + c]) for c in classes] for r in rows], dtype=float).ravel()
    return pred, true


def guided_pairs(variants: Sequence[str]) -> list[tuple[str, str]]:
    """(guided, base) for every guided variant whose unguided method is in ``variants``."""
    pairs = []
    for v in variants:
        base = find_base(v, variants) if is_guided(v) else None
        if base is not None:
            pairs.append((v, base))
    return pairs


def case_differences(guided: Mapping[int, Mapping[str, float]],
                     base: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per-case paired Dice difference guided - base over the seeds both have.

    ``guided``/``base``: seed -> case id -> Dice. Returns case id -> ``diff`` (mean over seeds),
    ``guided`` and ``base`` (mean Dice), ``per_seed`` (seed -> diff); cases with no finite pair
    are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    seeds = sorted(set(guided) & set(base))
    cases = sorted({c for s in seeds for c in guided[s]} & {c for s in seeds for c in base[s]})
    for case in cases:
        g = {s: guided[s].get(case, math.nan) for s in seeds}
        b = {s: base[s].get(case, math.nan) for s in seeds}
        ok = [s for s in seeds if math.isfinite(g[s]) and math.isfinite(b[s])]
        if not ok:
            continue
        per_seed = {s: g[s] - b[s] for s in ok}
        out[case] = {"diff": float(np.mean(list(per_seed.values()))), "guided": float(np.mean([g[s] for s in ok])),
                     "base": float(np.mean([b[s] for s in ok])), "per_seed": per_seed}
    return out


def select_extremes(diffs: Mapping[str, Mapping[str, Any]], top: int) -> dict[str, list[str]]:
    """The ``top`` cases where guidance helped most (largest positive mean difference) and hurt
    most (most negative); a case with no change in that direction is never listed."""
    ranked = sorted(diffs, key=lambda c: (diffs[c]["diff"], c))
    hurt = [c for c in ranked if diffs[c]["diff"] < 0][:top]
    helped = [c for c in reversed(ranked) if diffs[c]["diff"] > 0][:top]
    return {"helped": helped, "hurt": hurt}


def median_seed(per_seed: Mapping[int, float]) -> int:
    """The seed whose difference is the median one (the lower middle for an even count): the
    representative seed to show, rather than the most extreme."""
    ordered = sorted(per_seed, key=lambda s: (per_seed[s], s))
    return ordered[(len(ordered) - 1) // 2]


def qc_scatter_data(runs: Mapping[tuple[str, int], Path], variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per variant, the QC (predicted, true) Dice pooled over its seeds with MAE / Spearman / n;
    runs without ``qc/qc.csv`` are listed under ``missing``."""
    from qgseg.quality.metrics import regression_metrics

    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        preds, trues, seeds, missing = [], [], [], []
        for (variant, seed), run in sorted(runs.items()):
            if variant != v:
                continue
            if not (run / QC_FILE).is_file():
                missing.append(seed)
                continue
            p, t = read_qc(run / QC_FILE)
            preds.append(p)
            trues.append(t)
            seeds.append(seed)
        pred = np.concatenate(preds) if preds else np.zeros(0)
        true = np.concatenate(trues) if trues else np.zeros(0)
        m = regression_metrics(pred, true)
        out[v] = {"pred": pred, "true": true, "seeds": seeds, "missing": missing,
                  **{k: m[k] for k in ("mae", "spearman", "pearson", "n")}}
    return out


# ----------------------------------------------------------------------------- figures
def plot_qc_grid(data: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path:
    """Small multiples of predicted (y) vs true (x) Dice, one panel per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [v for v in data if data[v]["n"]]
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(3.2 * cols, 3.5 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    # one shared lower limit so panels compare; zoomed because final models' Dice cluster near 1
    finite = [x for v in names for x in (data[v]["pred"], data[v]["true"])]
    lo = max(0.0, math.floor(10 * min(float(np.nanmin(a)) for a in finite)) / 10) if finite else 0.0
    for i, v in enumerate(names):
        d = data[v]
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot([lo, 1], [lo, 1], color="0.5", linestyle="--", linewidth=1)
        ax.scatter(d["true"], d["pred"], s=8, alpha=0.5, linewidths=0)
        ax.set_xlim(lo - 0.01, 1.01)
        ax.set_ylim(lo - 0.01, 1.01)
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{v} ({len(d['seeds'])} seeds)\nMAE {d['mae']:.3f}, Spearman {d['spearman']:.2f}, "
                     f"n={d['n']}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("predicted Dice", fontsize=8)
        if i >= len(names) - cols:
            ax.set_xlabel("true Dice", fontsize=8)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _show_slice(case: Any, base: np.ndarray, guided: np.ndarray) -> tuple[Any, ...]:
    """2D arrays to draw: a volume shows the slice where the two predictions differ most."""
    image, truth = case.image, case.label
    if truth.ndim == 2:
        return image, truth, base, guided, None
    from qgseg.data.preprocess import slice_axis

    ax = slice_axis(case)
    changed = np.moveaxis(base != guided, ax, 0).reshape(base.shape[ax], -1).sum(1)
    if not changed.any():  # same prediction everywhere: show the slice with the most foreground
        changed = np.moveaxis(truth > 0, ax, 0).reshape(truth.shape[ax], -1).sum(1)
    k = int(np.argmax(changed))
    return (np.take(image, k, axis=ax + 1), np.take(truth, k, axis=ax), np.take(base, k, axis=ax),
            np.take(guided, k, axis=ax), k)


def plot_case(case: Any, base_pred: np.ndarray, guided_pred: np.ndarray, names: tuple[str, str],
              dice: tuple[float, float], path: Path, title: str) -> Path:
    """image | truth | base prediction | guided prediction of one case, Dice in the panel titles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from qgseg.viz.plots import overlay

    image, truth, base, guided, k = _show_slice(case, base_pred, guided_pred)
    panels = [(overlay(image, None, None), "image" if k is None else f"image (slice {k})"),
              (overlay(image, truth, None), "truth"),
              (overlay(image, truth, base), f"{names[0]}: case Dice {dice[0]:.3f}"),
              (overlay(image, truth, guided), f"{names[1]}: case Dice {dice[1]:.3f}")]
    legend = ("truth: green outline, prediction: magenta outline" if max(int(a.max(initial=0)) for a in (truth, base, guided)) <= 1 else
              "truth: one colour per class, prediction: thicker outline in its complementary colour")
    fig = Figure(figsize=(12, 3.5))
    FigureCanvasAgg(fig)
    for i, (rgb, label) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        ax.imshow(rgb)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{title}\n{legend}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # why JPEG: photographs (dermoscopy, endoscopy) make 0.5 MB PNGs; results are committed to the repository
    path = path.with_suffix(".jpg")
    fig.savefig(path, dpi=100, pil_kwargs={"quality": 85})
    return path


class _Predictors:
    """Loads each run's data and best checkpoint once (the grid's runs share one dataset)."""

    def __init__(self, data_root: str | None, out: Path) -> None:
        self.data_root, self.out = data_root, out
        self._data: dict[str, Any] = {}
        self._models: dict[Path, Any] = {}

    def data(self, run: Path) -> Any:
        from qgseg.config import load_config
        from qgseg.data.run_data import prepare_run_data

        overrides = ["runtime.progress=false"] + ([f"data.root={self.data_root}"] if self.data_root else [])
        cfg = load_config(run / CONFIG_FILE, overrides)
        key = repr(cfg.data)
        if key not in self._data:
            # output_dir is --out: a demo grid's generated data must not be written into the grid
            self._data[key] = prepare_run_data(cfg.data, self.out)
        return self._data[key]

    def predict(self, run: Path, case: Any) -> np.ndarray:
        from qgseg.pipeline import load_segmenter

        if run not in self._models:
            if not (run / CKPT_FILE).is_file():
                raise DataError("missing best checkpoint", run / CKPT_FILE)
            self._models[run] = load_segmenter(run / CKPT_FILE)
        return self._models[run].predict(case)


def _mean_dice(pred: np.ndarray, case: Any, classes: Sequence[str]) -> float:
    from qgseg.evaluation.metrics import case_metrics

    m = case_metrics(pred, case.label, len(classes), case.spacing, list(classes))
    vals = [v["dice"] for v in m.values() if math.isfinite(v["dice"])]
    return float(np.mean(vals)) if vals else math.nan


def overlays_for_pair(guided: str, base: str, runs: Mapping[tuple[str, int], Path], top: int,
                      loader: _Predictors | None, out: Path) -> dict[str, Any]:
    """Select the extreme cases of one (guided, base) pair and draw them (``loader`` None: select only)."""
    seeds = sorted({s for v, s in runs if v == guided} & {s for v, s in runs if v == base})
    per_case = {v: {s: read_per_case(runs[(v, s)] / PER_CASE_FILE) for s in seeds} for v in (guided, base)}
    diffs = case_differences(per_case[guided], per_case[base])
    chosen = select_extremes(diffs, top)
    entry: dict[str, Any] = {"base": base, "seeds": seeds, "n_cases": len(diffs),
                             "mean_case_diff": float(np.mean([d["diff"] for d in diffs.values()])) if diffs else None,
                             "helped": [], "hurt": []}
    for way, cases in chosen.items():
        for rank, case_id in enumerate(cases, 1):
            d = diffs[case_id]
            seed = median_seed(d["per_seed"])
            item = {"case_id": case_id, "diff": d["diff"], "guided_dice": d["guided"], "base_dice": d["base"],
                    "per_seed_diff": d["per_seed"], "shown_seed": seed,
                    "shown_base_dice": per_case[base][seed][case_id],
                    "shown_guided_dice": per_case[guided][seed][case_id]}
            if loader is not None:
                g_run, b_run = runs[(guided, seed)], runs[(base, seed)]
                data = loader.data(g_run)
                if case_id not in data.test:
                    raise DataError(f"test case {case_id} of {PER_CASE_FILE} is not in the test split that "
                                    f"its config.yaml rebuilds", g_run / CONFIG_FILE)
                case = data.dataset.load(case_id)
                classes = data.dataset.classes
                b_pred, g_pred = loader.predict(b_run, case), loader.predict(g_run, case)
                # recomputed from the reloaded checkpoints, to show the figure matches the CSV
                item["recomputed_base_dice"] = _mean_dice(b_pred, case, classes)
                item["recomputed_guided_dice"] = _mean_dice(g_pred, case, classes)
                name = f"{guided}_vs_{base}_{way}_{rank}_{case_id}.png".replace("+", "plus")
                title = (f"{case_id}: {guided} vs {base}, seed {seed} — guidance {way} "
                         f"(mean diff over {len(d['per_seed'])} seeds {d['diff']:+.3f})")
                shown = plot_case(case, b_pred, g_pred, (base, guided),
                                  (item["shown_base_dice"], item["shown_guided_dice"]), out / "overlays" / name, title)
                item["image"] = f"overlays/{shown.name}"
            entry[way].append(item)
    return entry


def write_readme(summary: Mapping[str, Any], path: Path) -> Path:
    """README.md of the figure folder: every image with the numbers behind it."""
    lines = [f"# Figures of the grid `{summary['grid']}`", "",
             f"Command: `{summary['command']}`  ", f"Commit: `{summary['git_commit']}`  ",
             f"Wall: {summary['wall_s']:.0f} s", "",
             "## Where guidance changed the test result most", "",
             ("Per-case test Dice difference guided - base, paired by seed, mean over the seeds both have; "
             "the seed shown is the one with the median difference on that case. Truth outlined in green, "
             "predictions in magenta (other classes: one colour pair each)."), ""]
    for guided, e in summary["pairs"].items():
        mean = "n/a" if e["mean_case_diff"] is None else f"{e['mean_case_diff']:+.4f}"
        lines += [f"### {guided} vs {e['base']} (seeds {e['seeds']}, {e['n_cases']} cases, mean diff {mean})", "",
                  "| | case | mean diff | base Dice | guided Dice | seed shown | image |", "|---|---|---|---|---|---|---|"]
        for way in ("helped", "hurt"):
            for it in e[way]:
                img = f"![]({it['image']})" if "image" in it else "-"
                lines.append(f"| {way} | {it['case_id']} | {it['diff']:+.3f} | {it['base_dice']:.3f} | "
                             f"{it['guided_dice']:.3f} | {it['shown_seed']} | {img} |")
            if not e[way]:
                lines.append(f"| {way} | none | | | | | |")
        lines.append("")
    lines += ["## Quality predictor on each final model's test predictions", "",
              f"![]({summary['qc_plot']})" if summary.get("qc_plot") else "(no QC files)", "",
              "| variant | seeds | MAE | Spearman | n (case x class) |", "|---|---|---|---|---|"]
    for v, q in summary["qc"].items():
        lines.append(f"| {v} | {q['seeds']} | {q['mae']:.4f} | {q['spearman']:.3f} | {q['n']} |")
    path.write_text("\n".join(lines) + "\n")
    return path


def remove_stale_overlays(out: Path, pairs: Mapping[str, Any]) -> list[Path]:
    """Delete the overlay images of an earlier run of this script that this run no longer shows (the cases
    it picks change as seeds are added), so the folder holds only the current figures; says what it removed."""
    shown = {it["image"] for e in pairs.values() for way in ("helped", "hurt") for it in e[way] if "image" in it}
    stale = sorted(p for p in (out / "overlays").glob("*.jpg") if f"overlays/{p.name}" not in shown)
    for p in stale:
        p.unlink()
    if stale:
        print(f"removed {len(stale)} overlay image(s) of an earlier run that this run no longer shows", flush=True)
    return stale


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path, help="a qgseg compare grid folder (read only)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs, summary.json and README.md")
    parser.add_argument("--top", type=int, default=3, help="cases per direction (helped / hurt) and pair")
    parser.add_argument("--data-root", default=None, help="data.root override (default: each run's config)")
    parser.add_argument("--no-overlays", action="store_true", help="select cases only, no checkpoint loaded")
    args = parser.parse_args(argv)
    start = time.time()
    grid, out = args.grid.resolve(), args.out.resolve()
    if out == grid or grid in out.parents:
        raise DataError("--out must not be inside the grid (the grid is read only)", out)
    runs = discover_runs(grid)
    variants = grid_variants(grid, runs)
    loader = None if args.no_overlays else _Predictors(args.data_root, out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = {}
    for guided, base in guided_pairs(variants):
        pairs[guided] = overlays_for_pair(guided, base, runs, args.top, loader, out)
        print(f"{guided} vs {base}: helped {[i['case_id'] for i in pairs[guided]['helped']]}, "
              f"hurt {[i['case_id'] for i in pairs[guided]['hurt']]}", flush=True)
    qc = qc_scatter_data(runs, variants)
    qc_plot = None
    if any(q["n"] for q in qc.values()):
        plot_qc_grid(qc, out / "qc_predicted_vs_true.png",
                     f"{grid.name}: quality predictor's predicted vs true Dice of the test predictions")
        qc_plot = "qc_predicted_vs_true.png"
    summary = {"grid": str(grid), "variants": variants, "top": args.top, "pairs": pairs, "qc_plot": qc_plot,
               "qc": {v: {k: q[k] for k in ("seeds", "missing", "mae", "spearman", "pearson", "n")}
                      for v, q in qc.items()},
               "command": command_line(), "git_commit": git_commit(), "wall_s": time.time() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    write_readme(summary, out / "README.md")
    if loader is not None:
        remove_stale_overlays(out, pairs)
    print(f"wrote {out / 'summary.json'} and README.md ({summary['wall_s']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
