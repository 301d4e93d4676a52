"""docs/benchmarks.md's generated block from study result files (benchmarks/study_report.py)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "study_report", Path(__file__).resolve().parents[1] / "benchmarks" / "study_report.py")
study_report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(study_report)


def _row(per_seed: dict[str, float]) -> dict:
    vals = list(per_seed.values())
    return {"dice": sum(vals) / len(vals), "dice_std": 0.01, "hd95": 5.0, "wall_s": 100.0,
            "seeds": [int(s) for s in per_seed], "per_seed": per_seed}


def _result(sup: dict, mt: dict, mtqw: dict) -> dict:
    diffs = {s: mtqw[s] - mt[s] for s in mt}
    return {"methods": {"sup": _row(sup), "mt": _row(mt), "mt-qw": _row(mtqw)},
            "guided_vs_base": {"mt-qw": {"base": "mt", "diff": sum(diffs.values()) / 3, "diff_std": 0.01,
                                         "wins": sum(d > 0 for d in diffs.values()), "n": 3, "per_seed": diffs}},
            "command": "python benchmarks/ssl_grid.py x --study", "compare_command": "qgseg compare x",
            "git_commit": "abc1234def"}


def test_report_from_fabricated_results(tmp_path: Path) -> None:
    seeds = ("0", "1", "2")
    (tmp_path / "study_ph2.json").write_text(json.dumps(_result(
        dict(zip(seeds, (0.80, 0.81, 0.82))), dict(zip(seeds, (0.85, 0.86, 0.84))),
        dict(zip(seeds, (0.87, 0.88, 0.83))))))
    (tmp_path / "ssl_acdc3.json").write_text(json.dumps(_result(  # no study file: read with a note
        dict(zip(seeds, (0.50, 0.52, 0.51))), dict(zip(seeds, (0.55, 0.54, 0.56))),
        dict(zip(seeds, (0.58, 0.57, 0.59))))))
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Hand-written\n\nkept\n\n{study_report.BEGIN}\nold\n{study_report.END}\ntail kept\n")
    study_report.write_report(tmp_path, out)
    text = out.read_text()
    assert text.startswith("# Hand-written\n\nkept\n") and text.endswith("tail kept\n") and "\nold\n" not in text
    assert "| mt-qw | 0.8600 ± 0.0100 (100 s) | 0.5800 ± 0.0100, HD95 5.0 (100 s) |" in text
    assert "read from the earlier grids" in text and "Not run yet (no result file): CVC-ColonDB, ACDC-7." in text
    assert "| mt-qw | mt | +0.0100 ± 0.0100 (2/3) | +0.0300 ± 0.0100 (3/3) |" in text
    qw = next(ln for ln in text.splitlines() if ln.startswith("| QW |"))
    assert "| 6 |" in qw and "5/6" in qw and "p = " in qw  # 6 (setting, seed) pairs, Wilcoxon ran
    assert "| PH2 | mt 0.8500 | mt-qw 0.8600 | +0.0100 | yes |" in text
    assert "not run: pl-c, pl-qw, cps" in text and "`python benchmarks/ssl_grid.py colondb --study`" in text
