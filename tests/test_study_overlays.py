"""Case selection and QC scatter data of benchmarks/study_overlays.py on a fabricated mini grid."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from qgseg.data.io import DataError

_SPEC = importlib.util.spec_from_file_location(
    "study_overlays", Path(__file__).resolve().parents[1] / "benchmarks" / "study_overlays.py")
study_overlays = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(study_overlays)

CASES = ("a", "b", "c", "d")
# per-case Dice of each (variant, seed): with guidance, a gains, d loses, b and c do not move
DICE = {("mt", 0): (0.6, 0.8, 0.9, 0.9), ("mt", 1): (0.7, 0.8, 0.9, 0.8),
        ("mt-qw", 0): (0.9, 0.8, 0.9, 0.7), ("mt-qw", 1): (0.8, 0.8, 0.9, 0.7)}


def _grid(root: Path) -> Path:
    for (variant, seed), dice in DICE.items():
        run = root / "runs" / f"{variant}_s{seed}"
        (run / "segmenter" / "eval").mkdir(parents=True)
        (run / "qc").mkdir()
        (run / "result.json").write_text("{}")
        rows = ["case_id,class,dice,iou,hd95,asd,unit"]
        rows += [f"{c},lesion,{d},0,0,0,pixels" for c, d in zip(CASES, dice)]
        (run / "segmenter" / "eval" / "test_per_case.csv").write_text("\n".join(rows) + "\n")
        qc = ["case_id,predicted_dice_lesion,true_dice_lesion,uncertainty_lesion,unsure"]
        qc += [f"{c},{d + 0.05},{d},0.01,0" for c, d in zip(CASES, dice)]
        (run / "qc" / "qc.csv").write_text("\n".join(qc) + "\n")
    (root / "runs" / "mt-qw_s2").mkdir()  # unfinished: no result.json, must be ignored
    (root / "comparison.json").write_text(json.dumps({"variants": ["mt", "mt-qw"]}))
    return root


def test_selection_on_mini_grid(tmp_path: Path) -> None:
    grid = _grid(tmp_path / "grid")
    runs = study_overlays.discover_runs(grid)
    assert sorted(runs) == sorted(DICE)
    variants = study_overlays.grid_variants(grid, runs)
    assert variants == ["mt", "mt-qw"]
    assert study_overlays.guided_pairs(variants) == [("mt-qw", "mt")]
    per_case = {v: {s: study_overlays.read_per_case(runs[(v, s)] / study_overlays.PER_CASE_FILE) for s in (0, 1)}
                for v in variants}
    diffs = study_overlays.case_differences(per_case["mt-qw"], per_case["mt"])
    assert diffs["a"]["diff"] == pytest.approx(0.2) and diffs["d"]["diff"] == pytest.approx(-0.15)
    assert diffs["b"]["diff"] == pytest.approx(0.0)
    chosen = study_overlays.select_extremes(diffs, top=3)
    assert chosen == {"helped": ["a"], "hurt": ["d"]}  # unchanged cases are never listed
    assert study_overlays.median_seed({0: 0.3, 1: 0.1, 2: 0.2}) == 2
    entry = study_overlays.overlays_for_pair("mt-qw", "mt", runs, 1, None, tmp_path / "out")
    assert entry["seeds"] == [0, 1] and entry["helped"][0]["case_id"] == "a"
    assert entry["helped"][0]["shown_seed"] in (0, 1) and "image" not in entry["helped"][0]


def test_qc_scatter_data_and_outputs(tmp_path: Path) -> None:
    grid = _grid(tmp_path / "grid")
    runs = study_overlays.discover_runs(grid)
    data = study_overlays.qc_scatter_data(runs, ["mt", "mt-qw"])
    assert data["mt"]["n"] == 8 and data["mt"]["seeds"] == [0, 1]
    assert data["mt"]["mae"] == pytest.approx(0.05)
    np.testing.assert_allclose(data["mt"]["pred"] - data["mt"]["true"], 0.05)
    summary = study_overlays.main([str(grid), "--out", str(tmp_path / "out"), "--no-overlays", "--top", "2"])
    assert (tmp_path / "out" / "qc_predicted_vs_true.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pairs"]["mt-qw"]["base"] == "mt"
    assert "mt-qw vs mt" in (tmp_path / "out" / "README.md").read_text()
    assert summary["qc"]["mt-qw"]["n"] == 8


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    grid = _grid(tmp_path / "grid")
    qc = grid / "runs" / "mt_s0" / "qc" / "qc.csv"
    qc.write_text("case_id,score\na,0.5\n")
    with pytest.raises(DataError, match="qc.csv"):
        study_overlays.read_qc(qc)
    with pytest.raises(DataError, match="inside the grid"):
        study_overlays.main([str(grid), "--out", str(grid / "figs")])
    with pytest.raises(DataError, match="no runs/"):
        study_overlays.discover_runs(tmp_path)


def test_stale_overlays_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    for name in ("mt-qw_vs_mt_helped_1_a.jpg", "mt-qw_vs_mt_hurt_1_b.jpg", "notes.txt"):
        (overlays / name).write_bytes(b"x")
    pairs = {"mt-qw": {"helped": [{"image": "overlays/mt-qw_vs_mt_helped_1_a.jpg"}], "hurt": [{"case_id": "c"}]}}
    removed = study_overlays.remove_stale_overlays(tmp_path, pairs)
    assert [p.name for p in removed] == ["mt-qw_vs_mt_hurt_1_b.jpg"]
    assert sorted(p.name for p in overlays.iterdir()) == ["mt-qw_vs_mt_helped_1_a.jpg", "notes.txt"]
