"""Hand-computed checks of qgseg.evaluation.metrics and its empty-structure conventions."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from qgseg.evaluation.metrics import (
    METRICS,
    case_metrics,
    case_row,
    distance_unit,
    format_table,
    max_distance,
    summarize,
    write_results,
)


def _squares() -> tuple[np.ndarray, np.ndarray]:
    # Two 4x4 squares shifted by 2 rows: overlap 8 px, sizes 16 + 16.
    pred = np.zeros((10, 10), dtype=np.int64)
    truth = np.zeros_like(pred)
    pred[0:4, 0:4] = 1
    truth[2:6, 0:4] = 1
    return pred, truth


def test_overlap_of_two_squares() -> None:
    m = case_metrics(*_squares(), num_classes=2)["class_1"]
    assert m["dice"] == pytest.approx(2 * 8 / 32)
    assert m["iou"] == pytest.approx(8 / 24)
    # Edge pixel farthest from the other edge set: row 0 of pred vs row 2 of truth.
    assert m["hd95"] == pytest.approx(2.0)


def test_identical_masks() -> None:
    pred, _ = _squares()
    m = case_metrics(pred, pred.copy(), num_classes=2)["class_1"]
    assert m == pytest.approx({"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0})


def _lines(axis: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Two single-pixel-wide lines, parallel, ``offset`` pixels apart along ``axis``."""
    pred = np.zeros((12, 12), dtype=np.int64)
    truth = np.zeros_like(pred)
    if axis == 0:
        pred[2, 1:11] = 1
        truth[2 + offset, 1:11] = 1
    else:
        pred[1:11, 2] = 1
        truth[1:11, 2 + offset] = 1
    return pred, truth


@pytest.mark.parametrize("offset", [1, 3, 5])
def test_distance_equals_offset_in_pixels(offset: int) -> None:
    m = case_metrics(*_lines(0, offset), num_classes=2)["class_1"]
    assert m["hd95"] == pytest.approx(offset)
    assert m["asd"] == pytest.approx(offset)
    assert m["dice"] == 0.0


def test_anisotropic_spacing_scales_the_right_axis() -> None:
    # spacing (2, 1): distances along axis 0 double, along axis 1 stay.
    along0 = case_metrics(*_lines(0, 3), num_classes=2, spacing=(2.0, 1.0))["class_1"]
    along1 = case_metrics(*_lines(1, 3), num_classes=2, spacing=(2.0, 1.0))["class_1"]
    assert along0["hd95"] == pytest.approx(6.0)
    assert along0["asd"] == pytest.approx(6.0)
    assert along1["hd95"] == pytest.approx(3.0)
    assert distance_unit((2.0, 1.0)) == "mm"
    assert distance_unit(None) == "pixels"


def test_both_empty_is_perfect() -> None:
    z = np.zeros((8, 8), dtype=np.int64)
    m = case_metrics(z, z.copy(), num_classes=2)["class_1"]
    assert m == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0}


@pytest.mark.parametrize("empty", ["pred", "truth"])
def test_one_empty_is_penalised_with_image_diagonal(empty: str) -> None:
    z = np.zeros((6, 8), dtype=np.int64)
    full = z.copy()
    full[2:4, 2:4] = 1
    pred, truth = (z, full) if empty == "pred" else (full, z)
    m = case_metrics(pred, truth, num_classes=2)["class_1"]
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    assert m["hd95"] == pytest.approx(10.0)  # sqrt(6^2 + 8^2)
    assert m["asd"] == pytest.approx(10.0)
    assert all(math.isfinite(v) for v in m.values())
    # In mm with spacing: extent (6*2, 8*1) -> diagonal sqrt(144 + 64).
    mm = case_metrics(pred, truth, num_classes=2, spacing=(2.0, 1.0))["class_1"]
    assert mm["hd95"] == pytest.approx(math.sqrt(208))
    assert max_distance((6, 8), (2.0, 1.0)) == pytest.approx(math.sqrt(208))


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        case_metrics(np.zeros((4, 4), int), np.zeros((4, 5), int), num_classes=2)


def test_bad_inputs_rejected() -> None:
    a = np.zeros((4, 4), int)
    with pytest.raises(ValueError, match="outside"):
        case_metrics(a + 2, a, num_classes=2)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(a, a, num_classes=2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="class names"):
        case_metrics(a, a, num_classes=3, class_names=["bg", "a"])


def test_3d_cubes_with_spacing() -> None:
    pred = np.zeros((8, 10, 10), dtype=np.int64)
    truth = np.zeros_like(pred)
    pred[2:6, 2:6, 2:6] = 1
    truth[3:7, 2:6, 2:6] = 1  # shifted by one slice: overlap 3/4
    m = case_metrics(pred, truth, num_classes=2, spacing=(2.5, 1.0, 1.0))["class_1"]
    assert m["dice"] == pytest.approx(0.75)
    assert m["iou"] == pytest.approx(48 / 80)
    # The worst edge voxels are one slice apart: 2.5 mm.
    assert m["hd95"] == pytest.approx(2.5)
    assert 0.0 < m["asd"] <= 2.5


def test_multiclass_classes_are_independent() -> None:
    truth = np.zeros((12, 12), dtype=np.int64)
    truth[1:5, 1:5] = 1
    truth[7:11, 7:11] = 2
    pred = truth.copy()
    pred[7:11, 7:11] = 0  # class 2 missed entirely, class 1 perfect, class 3 absent in both
    names = ["background", "a", "b", "c"]
    m = case_metrics(pred, truth, num_classes=4, class_names=names)
    assert list(m) == ["a", "b", "c"]
    assert m["a"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0}
    assert m["b"]["dice"] == 0.0 and m["b"]["hd95"] == pytest.approx(max_distance((12, 12)))
    assert m["c"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0}
    # Changing class 1's prediction leaves class 2 untouched.
    pred2 = pred.copy()
    pred2[1:3, 1:5] = 0
    m2 = case_metrics(pred2, truth, num_classes=4, class_names=names)
    assert m2["a"]["dice"] == pytest.approx(2 * 8 / 24)
    assert m2["b"] == m["b"]


def _rows() -> list[dict]:
    return [
        case_row("c0", {"a": {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "asd": 0.0},
                        "b": {"dice": 0.5, "iou": 0.2, "hd95": 4.0, "asd": 2.0}}),
        case_row("c1", {"a": {"dice": 0.5, "iou": 0.4, "hd95": 2.0, "asd": 1.0},
                        "b": {"dice": 0.0, "iou": 0.0, "hd95": 8.0, "asd": 4.0}}),
    ]


def test_summarize_known_rows() -> None:
    s = summarize(_rows(), ["background", "a", "b"])
    assert s["n"] == 2 and s["unit"] == "pixels"
    assert list(s["classes"]) == ["a", "b"]
    assert s["classes"]["a"]["dice"] == pytest.approx({"mean": 0.75, "std": 0.25})
    assert s["classes"]["b"]["hd95"] == pytest.approx({"mean": 6.0, "std": 2.0})
    # Per-case foreground means: dice 0.75 and 0.25 -> mean 0.5, std 0.25.
    assert s["mean_foreground"]["dice"] == pytest.approx({"mean": 0.5, "std": 0.25})
    assert s["mean_foreground"]["asd"] == pytest.approx({"mean": 1.75, "std": 0.75})
    # Foreground-only names give the same summary.
    assert summarize(_rows(), ["a", "b"]) == s


def test_summarize_rejects_mixed_units() -> None:
    rows = _rows()
    rows[1]["unit"] = "mm"
    with pytest.raises(ValueError, match="units"):
        summarize(rows, ["a", "b"])


def test_write_results_and_table(tmp_path) -> None:
    rows = _rows()
    s = summarize(rows, ["background", "a", "b"])
    paths = write_results(rows, s, tmp_path / "out", prefix="test")
    with paths["per_case_csv"].open() as fh:
        per_case = list(csv.DictReader(fh))
    assert len(per_case) == 4  # 2 cases x 2 classes
    assert per_case[1]["case_id"] == "c0" and per_case[1]["class"] == "b"
    assert float(per_case[1]["hd95"]) == 4.0
    assert json.loads(paths["summary_json"].read_text()) == s
    with paths["summary_csv"].open() as fh:
        summary_rows = list(csv.DictReader(fh))
    assert [r["class"] for r in summary_rows] == ["a", "b", "mean_foreground"]
    assert float(summary_rows[0]["dice_mean"]) == pytest.approx(0.75)

    table = format_table(s, title="Demo")
    lines = table.splitlines()
    assert lines[0] == "Demo"
    assert "0.750 ± 0.250" in table  # class a dice
    assert "6.00 ± 2.00" in table  # class b hd95
    assert "mean (foreground)" in table and "pixels" in table
    assert all(m.upper() in table.upper() for m in METRICS)
