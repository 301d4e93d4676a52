"""Evaluate a segmenter on labeled cases: per-case, per-class metrics, summary and overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from tqdm.auto import tqdm

from ..data.case import Case
from .inference import Segmenter
from .metrics import case_metrics, case_row, format_table, summarize, write_results


def evaluate_segmenter(segmenter: Segmenter, cases: Iterable[Case], out_dir: Path | None = None,
                       overlays: int = 0, prefix: str = "test", progress: bool = True,
                       total: int | None = None, keep_predictions: bool = False) -> dict[str, Any]:
    """Predict every case at its original resolution and score it against its label.

    Volumes given to a 2D network are predicted slice by slice and scored as volumes.
    Returns ``{"rows", "summary", "table", "paths"}`` (plus ``"predictions"``: case id -> label
    map, with ``keep_predictions``, so a later step such as QC need not predict again); with
    ``out_dir`` also writes ``<prefix>_per_case.csv``, ``<prefix>_summary.json/.csv`` and
    ``overlays/*.png``.
    """
    from ..viz.plots import save_overlay

    classes = segmenter.spec.classes
    rows = []
    predictions: dict[str, Any] = {}
    shown = 0
    for case in tqdm(cases, desc=f"evaluate {prefix}", total=total, disable=not progress, dynamic_ncols=True):
        if case.label is None:
            raise ValueError(f"{case.case_id}: cannot evaluate a case without a label")
        pred = segmenter.predict(case)
        if keep_predictions:
            predictions[case.case_id] = pred
        rows.append(case_row(case.case_id, case_metrics(pred, case.label, len(classes), case.spacing, classes),
                             case.spacing))
        if out_dir is not None and shown < overlays:
            dice = sum(rows[-1][c]["dice"] for c in classes[1:]) / (len(classes) - 1)
            save_overlay(case.image, case.label, pred, Path(out_dir) / "overlays" / f"{case.case_id}.png",
                         title=f"{case.case_id}  Dice {dice:.3f}")
            shown += 1
    if not rows:
        raise ValueError("no cases to evaluate")
    summary = summarize(rows, classes)
    table = format_table(summary, title=f"{prefix}: {len(rows)} cases")
    paths = write_results(rows, summary, out_dir, prefix=prefix) if out_dir is not None else {}
    out = {"rows": rows, "summary": summary, "table": table, "paths": paths}
    if keep_predictions:
        out["predictions"] = predictions
    return out
