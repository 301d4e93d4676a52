"""End-to-end workflows shared by the CLI commands (train -> evaluate -> report)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .config import RunConfig
from .data.run_data import RunData, prepare_run_data
from .engine.checkpoint import load_checkpoint
from .engine.run_dir import prepare_run_dir
from .engine.segmentation import SegmentationTrainer
from .evaluation.evaluate import evaluate_segmenter
from .evaluation.inference import ModelSpec, Segmenter


def default_run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def load_segmenter(path: Path, device: Any = "cpu", cfg: RunConfig | None = None) -> Segmenter:
    kwargs = {}
    if cfg is not None:
        kwargs = {"sw_batch_size": cfg.eval.sw_batch_size, "sw_overlap": cfg.eval.sw_overlap}
    return Segmenter.from_checkpoint(path, device=device, **kwargs)


def train_and_evaluate(cfg: RunConfig, run_dir: Path | None = None, resume: bool = False,
                       data: RunData | None = None, method=None, evaluate: bool = True,
                       keep_predictions: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (supervised unless ``method`` is given), select the best checkpoint on the
    validation split, then evaluate it once on the test split. Writes everything under ``run_dir``,
    which must not hold a run unless ``resume`` or ``overwrite`` (:func:`prepare_run_dir`).
    ``keep_predictions`` returns the test predictions too (``result["test_predictions"]``)."""
    from .viz.plots import plot_training_curves

    run_dir = Path(run_dir or default_run_dir(cfg))
    prepare_run_dir(run_dir, resume, overwrite)
    start = time.time()
    data = data or prepare_run_data(cfg.data, cfg.output_dir)
    trainer = SegmentationTrainer(cfg, run_dir, method=method, data=data)
    fit = trainer.fit(resume=resume)
    result: dict[str, Any] = {"run_dir": str(run_dir), "best_val_dice": fit.best_metric,
                              "best_iteration": fit.best_iteration, "selection": fit.selection,
                              "train_wall_s": fit.wall_s}
    if not trainer.is_main or not evaluate:
        return result
    log_csv = run_dir / "logs" / "csv" / "metrics.csv"
    if log_csv.is_file():
        result["curves"] = str(plot_training_curves(log_csv, run_dir / "plots" / "training_curves.png", cfg.name))
    segmenter = load_segmenter(fit.best_path, trainer.device, cfg)
    ds = data.dataset
    ev = evaluate_segmenter(segmenter, (ds.load(i) for i in data.test), out_dir=run_dir / "eval",
                            overlays=cfg.eval.overlays, prefix="test", progress=cfg.runtime.progress,
                            total=len(data.test), keep_predictions=keep_predictions)
    result.update({"test": ev["summary"], "table": ev["table"], "wall_s": time.time() - start})
    with open(run_dir / "eval" / "result.json", "w") as fh:
        json.dump({k: v for k, v in result.items() if k != "table"}, fh, indent=2)
    result["test_rows"] = ev["rows"]
    if keep_predictions:
        result["test_predictions"] = ev["predictions"]
    return result


def checkpoint_spec(path: Path) -> ModelSpec:
    return ModelSpec.from_dict(load_checkpoint(path)["meta"]["spec"])


def quality_control(scorer, segmenter: Segmenter, cases, rows: list[dict[str, Any]], out_dir: Path,
                    flag_below: float = 0.7, predictions: dict[str, Any] | None = None) -> dict[str, Any]:
    """Standalone QC of a segmenter's masks: predicted Dice (no ground truth used) next to the
    true Dice from the evaluation ``rows``; writes ``qc.csv``, a scatter plot and, for flagged
    cases, overlays of the mask and the predictor's estimate of the truth (``overlays/``).
    Masks come from ``predictions`` (case id -> label map) when given, else the segmenter
    predicts them."""
    import csv

    import numpy as np

    from .quality.metrics import regression_metrics
    from .quality.scoring import save_qc_overlay
    from .viz.quality_plots import scatter_pred_vs_true

    true_by_id = {r["case_id"]: r for r in rows}
    fg = segmenter.spec.classes[1:]
    ref = scorer.uncertainty_reference
    out = []
    for case in cases:
        mask = predictions[case.case_id] if predictions is not None else segmenter.predict(case)
        true = [true_by_id[case.case_id][c]["dice"] for c in fg]
        predicted, unc = scorer.score(case, mask, return_uncertainty=True)
        out.append({"case_id": case.case_id, "predicted": [float(v) for v in predicted], "true": true,
                    "uncertainty": [float(v) for v in unc], "unsure": ref is not None and float(max(unc)) > ref})
        if min(predicted) < flag_below and getattr(scorer, "has_truth_map", False):
            # why: show the reviewer where the predictor thinks the mask is wrong
            save_qc_overlay(scorer, case, mask, out_dir / "overlays" / f"{case.case_id}.png", float(min(predicted)))
    pred = np.array([r["predicted"] for r in out])
    true = np.array([r["true"] for r in out])
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "qc.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id"] + [f"predicted_dice_{c}" for c in fg] + [f"true_dice_{c}" for c in fg]
                        + [f"uncertainty_{c}" for c in fg] + ["unsure"])
        for r in out:
            writer.writerow([r["case_id"], *r["predicted"], *r["true"], *r["uncertainty"], int(r["unsure"])])
    scatter_pred_vs_true(pred, true, out_dir / "qc_predicted_vs_true.png", title="QC of the segmenter's test masks")
    flagged = sorted((r for r in out if min(r["predicted"]) < flag_below), key=lambda r: min(r["predicted"]))
    unsure = [r for r in out if r.get("unsure")]
    return {"metrics": regression_metrics(pred.ravel(), true.ravel()), "flagged": flagged, "unsure": unsure,
            "rows": out}


#: the methods ``qgseg demo`` compares: the baseline, a semi-supervised method, the same method with
#: quality-weighted pseudolabels, and the baseline with quality-aware regularisation
DEMO_METHODS = ("sup", "mt", "mt-qw", "qar")


def _read_qc_rows(path: Path) -> list[dict[str, Any]]:
    """A run's ``qc/qc.csv`` -> [{case_id, predicted, true}] with the worst class of each case."""
    import csv

    rows = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            pred = [float(v) for k, v in r.items() if k.startswith("predicted_dice_")]
            true = [float(v) for k, v in r.items() if k.startswith("true_dice_")]
            rows.append({"case_id": r["case_id"], "predicted": min(pred), "true": min(true)})
    return rows


def run_demo(cfg: RunConfig, resume: bool = False, jobs: int = 2) -> dict[str, Any]:
    """``qgseg demo``: generate the demo data, train the quality predictor once (phase 1), compare
    SUP, MT, MT-QW and QAR (one seed, ``jobs`` runs at a time, through :func:`qgseg.compare.run_compare`:
    each an ordinary ``qgseg run`` with the shared predictor, its test evaluation and QC), then show
    the QC of the run with the best *validation* Dice and a summary. Without ``resume`` everything
    is trained afresh; with it, finished runs are kept and unfinished ones continue."""
    from .compare import format_markdown, run_compare
    from .config import save_config

    start = time.time()
    run_dir = default_run_dir(cfg)
    config_path = run_dir / "config.yaml"
    save_config(cfg, config_path)  # the runs read the demo config (with every --set) from here
    seeds = [cfg.train.seed]
    grid = run_compare(str(config_path), DEMO_METHODS, seeds, jobs=jobs, output_dir=cfg.output_dir, name=cfg.name,
                       fresh=not resume, show=False)
    table = grid.table
    data = prepare_run_data(cfg.data, cfg.output_dir)
    done = {o.spec.variant: o for o in grid.outcomes if o.result is not None}
    rows = [("data", data.describe())]
    p1 = grid.phase1 or {}
    syn, real = p1.get("synthetic") or {}, p1.get("real") or {}
    if syn:
        from .quality.predictor import backbone_label

        rows.append(("quality predictor", f"{backbone_label(cfg.quality.backbone, cfg.quality.depth)} "
                                          f"{cfg.quality.width}: synthetic masks MAE "
                                          f"{syn.get('mae', float('nan')):.3f} Spearman "
                                          f"{syn.get('spearman', float('nan')):.3f}"
                                          + (f"; unseen networks MAE {real['mae']:.3f}" if real.get("mae") is not None
                                             else "")
                                          + (f" ({p1['wall_s']:.0f} s)" if p1.get("wall_s") else "")))
    rows.append(("segmenters", (f"{cfg.model.name} {cfg.model.features}, {cfg.train.iterations} iterations each, "
                                f"seed {cfg.train.seed}; best checkpoint on the validation split")))
    test_line = []
    for v in DEMO_METHODS:
        m = table["methods"][v]
        if m["dice"] is not None:
            test_line.append(f"{v} {m['dice']:.3f}")
    rows.append(("test Dice", ", ".join(test_line) or "no finished run"))
    for v, g in table["guided_vs_base"].items():
        if g["n"]:
            rows.append((f"{v} vs {g['base']}", f"{g['diff']:+.3f} test Dice (won {g['wins']}/{g['n']} seeds)"))
    qc_run = None
    if done:
        # why: the run to show is chosen on validation, never on the test split
        pick = max(done.values(), key=lambda o: o.result["best_val_dice"])
        qc_run = pick.spec.run_dir
        q = pick.result["qc"]
        m = q["metrics"]
        rows.append(("QC of segmenter", (f"{pick.spec.variant} (best validation Dice "
                                         f"{pick.result['best_val_dice']:.3f}): predicted vs true Dice on {m['n']} "
                                         f"test masks, no ground truth used: MAE {m['mae']:.3f}, Pearson "
                                         f"{m['pearson']:.3f}, Spearman {m['spearman']:.3f}; {len(q['flagged'])} "
                                         f"flagged below 0.7, {q['n_unsure']} unsure")))
    wall = time.time() - start
    rows += [("wall time", f"{wall:.0f} s"), ("run folder", str(grid.grid))]
    if qc_run is not None and (qc_run / "qc" / "qc.csv").is_file():
        by_id = {r["case_id"]: r for r in _read_qc_rows(qc_run / "qc" / "qc.csv")}
        flagged = [by_id[c] for c in done[pick.spec.variant].result["qc"]["flagged"] if c in by_id]
        if flagged:
            print(f"\ncases of {pick.spec.variant} flagged for review (predicted Dice < 0.7, worst first):")
            for r in flagged[:10]:
                print(f"  {r['case_id']}: predicted {r['predicted']:.3f}, true {r['true']:.3f}")
    print()
    print(format_markdown(table))
    width = max(len(k) for k, _ in rows)
    print("qgseg demo summary")
    print("-" * 78)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print("-" * 78)
    print(f"see {grid.grid}/: comparison.md/.csv/.json/.png, quality/ (the shared predictor, its eval report), "
          f"runs/<variant>_s{cfg.train.seed}/ (segmenter/, qc/, result.json, log.txt)")
    return {"grid": str(grid.grid), "table": table, "phase1": grid.phase1, "predictor": grid.predictor,
            "qc_run": str(qc_run) if qc_run else None, "failed": [str(o.spec.run_dir) for o in grid.failed],
            "wall_s": wall}


# ----------------------------------------------------------------------------- guided SSL (phase 2)
#: short names of ``qgseg compare`` variants -> ssl.method
VARIANT_ALIASES = {"sup": "supervised", "pl": "pl-c", "fixmatch-style": "fixmatch"}


def variant_overrides(variant: str) -> list[str]:
    """Config overrides of a comparison variant: ``METHOD``, ``METHOD-qw``, ``METHOD+qar``,
    ``METHOD-qw+qar`` or ``qar`` (= ``sup+qar``). ``pl-qw`` is PL with quality weights in place of
    PL-C's confidence weights."""
    from .config import ConfigError
    from .ssl import METHODS

    name = variant.strip().lower()
    qar = name == "qar" or name.endswith("+qar")
    base = "sup" if name == "qar" else name.removesuffix("+qar")
    qw = base.endswith("-qw")
    base = base.removesuffix("-qw")
    method = VARIANT_ALIASES.get(base, base)
    if method not in METHODS:
        raise ConfigError(f"variant '{variant}': unknown method '{base}' (methods: {', '.join(METHODS)}; "
                          f"add -qw for quality-weighted pseudolabels, +qar for QAR, or 'qar' alone)")
    return [f"ssl.method={method}", f"guidance.qw={str(qw).lower()}", f"guidance.qar={str(qar).lower()}"]


def run_guided(cfg: RunConfig, run_dir: Path | None = None, resume: bool = False, data: RunData | None = None,
               flag_below: float = 0.7, overwrite: bool = False) -> dict[str, Any]:
    """``qgseg run``: phase 1 (the quality predictor, unless ``guidance.predictor`` names one, which is
    then checked for leaks), phase 2 (``ssl.method`` guided by ``guidance``), evaluation on the test
    split, and a QC report: every test prediction scored by g next to its true Dice (MAE, Pearson,
    Spearman) with the flagged cases. Writes ``<run>/result.json``. ``resume`` / ``overwrite``: as for
    :func:`train_and_evaluate`, for the whole run folder (both phases)."""
    import copy

    from .quality.scoring import load_quality_predictor

    run_dir = Path(run_dir or default_run_dir(cfg))
    prepare_run_dir(run_dir, resume, overwrite)  # both phases at once: the nested checks then find nothing
    start = time.time()
    data = data or prepare_run_data(cfg.data, cfg.output_dir)
    cfg = copy.deepcopy(cfg)
    predictor = cfg.guidance.predictor
    phase1: dict[str, Any] = {}
    if not predictor:
        from .quality.training import train_quality_predictor

        print(f"phase 1: training the quality predictor on the {len(data.labeled)} labeled cases")
        qres = train_quality_predictor(cfg, run_dir / "quality", resume=resume, data=data)
        predictor = qres["checkpoint"]
        cfg.guidance.predictor = str(predictor)
        phase1 = {"checkpoint": str(predictor), "wall_s": qres.get("wall_s")}
    print(f"phase 2: {cfg.ssl.method}{' -QW' if cfg.guidance.qw else ''}{' +QAR' if cfg.guidance.qar else ''}")
    result = train_and_evaluate(cfg, run_dir / "segmenter", resume=resume, data=data, keep_predictions=True)
    if "test_rows" not in result:  # a DDP rank > 0: rank 0 evaluates and writes
        return result
    result["phase1"] = phase1
    scorer = load_quality_predictor(predictor)
    segmenter = load_segmenter(run_dir / "segmenter" / "checkpoints" / "best.ckpt", cfg=cfg)
    ds = data.dataset
    qc = quality_control(scorer, segmenter, (ds.load(i) for i in data.test), result["test_rows"], run_dir / "qc",
                         flag_below=flag_below, predictions=result.pop("test_predictions"))
    result["qc"] = {"metrics": qc["metrics"], "flagged": [r["case_id"] for r in qc["flagged"]],
                    "n_unsure": len(qc["unsure"])}
    result["wall_s"] = time.time() - start
    result["variant"] = {"method": cfg.ssl.method, "qw": cfg.guidance.qw, "qar": cfg.guidance.qar,
                         "seed": cfg.train.seed}
    with open(run_dir / "result.json", "w") as fh:
        json.dump({k: v for k, v in result.items() if k not in ("table", "test_rows")}, fh, indent=2, default=float)
    m = qc["metrics"]
    print(result["table"])
    print(f"\nQC of the test predictions by the quality predictor (no ground truth used): MAE {m['mae']:.3f}, "
          f"Pearson {m['pearson']:.3f}, Spearman {m['spearman']:.3f}; {len(qc['flagged'])} flagged below "
          f"{flag_below:g}" + (": " + ", ".join(r["case_id"] for r in qc["flagged"][:10]) if qc["flagged"] else ""))
    print(f"run folder: {run_dir} (segmenter/, quality/, qc/, result.json); wall {result['wall_s']:.0f} s")
    return result
