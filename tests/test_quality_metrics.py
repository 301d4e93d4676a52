"""Quality metrics against hand-computed values, the markdown table and the plots."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from qgseg.quality.metrics import (
    auroc,
    average_precision,
    failure_detection,
    format_quality_table,
    mae_per_bin,
    quality_report,
    regression_metrics,
    uncertainty_metrics,
)
from qgseg.viz.quality_plots import reliability_plot, scatter_pred_vs_true

# Tiny example used throughout. Failures at t=0.7 are samples 0 and 1 (true 0.3, 0.6).
TRUE = np.array([0.3, 0.6, 0.75, 0.9])
PRED = np.array([0.2, 0.85, 0.5, 0.9])
# score = 1 - pred = [0.8, 0.15, 0.5, 0.1]; positives {0.8, 0.15}, negatives {0.5, 0.1}.
# AUROC: pairs (0.8>0.5, 0.8>0.1, 0.15<0.5, 0.15>0.1) -> 3/4.
# AP: ranked 0.8(+) 0.5(-) 0.15(+) 0.1(-): P@1=1 at R=0.5, P@3=2/3 at R=1 -> 0.5*1 + 0.5*2/3 = 5/6.


def test_regression_perfect_and_known() -> None:
    m = regression_metrics(TRUE, TRUE)
    assert m["mae"] == 0 and m["rmse"] == 0 and m["n"] == 4
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] == pytest.approx(1.0)
    m = regression_metrics(PRED, TRUE)
    err = np.abs(PRED - TRUE)  # [0.1, 0.25, 0.25, 0.0]
    assert m["mae"] == pytest.approx(0.15)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean(err**2)))
    # pred ranks [1, 3, 2, 4] vs true ranks [1, 2, 3, 4]
    # d = [0, 1, -1, 0] -> rho = 1 - 6*2/(4*15) = 0.8
    assert m["spearman"] == pytest.approx(0.8)


def test_constant_prediction_gives_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any ConstantInputWarning would fail the test
        m = regression_metrics(np.full(4, 0.5), TRUE)
    assert math.isnan(m["spearman"]) and math.isnan(m["pearson"])
    assert m["mae"] == pytest.approx(np.mean(np.abs(0.5 - TRUE)))
    assert math.isnan(regression_metrics(np.array([]), np.array([]))["mae"])


def test_nonfinite_pairs_dropped() -> None:
    m = regression_metrics(np.array([0.5, np.nan, 0.2]), np.array([0.5, 0.3, np.nan]))
    assert m["n"] == 1 and m["mae"] == 0


def test_auroc_and_ap_hand_computed() -> None:
    labels = TRUE < 0.7
    scores = 1 - PRED
    assert auroc(labels, scores) == pytest.approx(0.75)
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    # Ties: pos {0.5, 0.2}, neg {0.5}: pairs (tie -> 0.5, 0.2<0.5 -> 0) -> 0.25.
    # AP with ties entering together: thr 0.5 -> P=1/2,R=1/2; thr 0.2 -> P=2/3,R=1 -> 1/4 + 1/3 = 7/12.
    assert auroc([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25)
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(7 / 12)
    assert math.isnan(auroc([1, 1], [0.1, 0.2])) and math.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_failure_detection_keys_and_values() -> None:
    fd = failure_detection(PRED, TRUE)
    assert fd["auroc_0.7"] == pytest.approx(0.75) and fd["auprc_0.7"] == pytest.approx(5 / 6)
    assert fd["positives_0.7"] == 2 and fd["positives_0.5"] == 1 and fd["positives_0.8"] == 3
    assert fd["auroc_0.5"] == pytest.approx(1.0) and fd["auprc_0.5"] == pytest.approx(1.0)
    fd = failure_detection(PRED, TRUE, thresholds=(0.2,))  # no failures -> undefined
    assert math.isnan(fd["auroc_0.2"]) and math.isnan(fd["auprc_0.2"]) and fd["positives_0.2"] == 0


def test_mae_per_bin_counts() -> None:
    true = np.array([0.0, 0.1, 0.5, 0.85, 0.95, 1.0])
    pred = true + np.array([0.1, 0.1, 0.2, 0.0, 0.05, -0.1])
    rows = mae_per_bin(pred, true)
    assert [r["n"] for r in rows] == [2, 0, 1, 0, 1, 2]  # Dice 1.0 falls in the last bin
    assert rows[0]["mae"] == pytest.approx(0.1) and math.isnan(rows[1]["mae"])
    assert rows[5]["mae"] == pytest.approx(0.075)
    assert rows[0]["lo"] == 0.0 and rows[0]["hi"] == 0.2


def test_quality_report_multiclass_and_table() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 1, size=(30, 2))
    pred = np.clip(true + rng.normal(0, 0.1, size=true.shape), 0, 1)
    rep = quality_report(pred, true, per_class={0: "LV", 1: "RV"})
    assert set(rep["per_class"]) == {"LV", "RV"}
    assert rep["all"]["n"] == 60 and rep["per_class"]["LV"]["n"] == 30
    assert rep["per_class"]["RV"]["mae"] == pytest.approx(np.mean(np.abs(pred[:, 1] - true[:, 1])))
    assert sum(b["n"] for b in rep["all"]["bins"]) == 60
    table = format_quality_table(rep)
    assert "| LV |" in table and "| RV |" in table and "AUROC<0.7" in table
    assert quality_report(pred[:, 0], true[:, 0])["per_class"] == {}
    assert set(quality_report(pred, true)["per_class"]) == {"class_1", "class_2"}
    with pytest.raises(ValueError):
        quality_report(pred, true, per_class=["only_one"])


def test_plots_write_pngs(tmp_path) -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 1, size=(40, 2))
    pred = np.clip(true + rng.normal(0, 0.1, size=true.shape), 0, 1)
    cats = ["erode", "dilate", "shift", "gt"] * 10
    p1 = scatter_pred_vs_true(pred, true, tmp_path / "a" / "scatter.png", title="val", categories=cats)
    p2 = scatter_pred_vs_true(pred[:, 0], true[:, 0], tmp_path / "scatter_plain.png")
    p3 = reliability_plot(pred, true, tmp_path / "b" / "c" / "rel.png", bins=5)
    for p in (p1, p2, p3):
        assert p.is_file() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_structure_size_keys_bin_each_class_of_each_mask():
    import torch

    from qgseg.quality.evaluation import structure_size_keys

    truth = torch.zeros(3, 2, 100, 100)
    truth[0, 0, :50] = 1  # 50 %
    truth[1, 0, :1, :10] = 1  # 0.1 %
    truth[1, 1, :10, :10] = 1  # 1 %
    truth[2, 1, :30, :30] = 1  # 9 %
    truth[2, 0, :1, :50] = 1  # exactly 0.5 %: the lower edge of the next bin
    assert structure_size_keys(truth).tolist() == [[">=10%", "absent"], ["<0.5%", "0.5-2%"], ["0.5-2%", "2-10%"]]


def test_by_key_takes_row_or_entry_keys_and_an_order():
    import numpy as np

    from qgseg.quality.evaluation import _by_key

    pred = np.array([[0.1, 0.9], [0.5, 0.5], [0.2, 0.4]])
    true = np.array([[0.2, 0.9], [0.5, 0.3], [0.2, 0.4]])
    rows = _by_key(pred, true, ["b", "a", "b"])
    assert list(rows) == ["a", "b"] and rows["a"]["n"] == 2 and rows["b"]["n"] == 4
    entries = _by_key(pred, true, np.array([["x", "y"], ["y", "x"], ["x", "x"]]), order=["y", "z", "x"])
    assert list(entries) == ["y", "x"]  # absent keys are skipped, the given order is kept
    assert entries["y"]["mae"] == np.mean([0.0, 0.0]) and entries["x"]["n"] == 4


def test_largest_errors_names_the_worst_slice_of_each_breakdown():
    from qgseg.quality.evaluation import largest_errors

    def m(mae, n):
        return {"mae": mae, "n": n, "spearman": 0.5}

    synthetic = {"all": m(0.1, 30),
                 "by_category": {"identity": m(0.05, 10), "swap": m(0.2, 10), "blob": m(float("nan"), 10)},
                 "by_group": {"7": m(0.09, 15), "8": m(0.3, 15)},
                 "by_structure_size": {">=10%": m(0.04, 30)}}  # one slice only: nothing to compare
    lines = largest_errors(synthetic)
    assert lines == ["category swap: MAE 0.200 (n=10; all 0.100)", "group 8: MAE 0.300 (n=15; all 0.100)"]


class _StubTruthScorer:
    """Stands in for a QualityScorer whose decoder returns a fixed estimate of the truth."""

    has_truth_map = True
    fg_classes = ("a", "b")

    def __init__(self, estimate):
        self.estimate = estimate

    def truth_probabilities(self, images, masks):
        return self.estimate


def test_truth_map_recognition_dice_per_class_and_group():
    import torch

    from qgseg.quality.evaluation import truth_map_recognition

    truth = torch.zeros(3, 2, 8, 8)
    truth[:, 0, 2:6, 2:6] = 1  # class a present everywhere (16 px); class b absent in row 2
    truth[:2, 1, 0:2, 0:4] = 1
    est = truth.clone() * 0.9  # above 0.5: the estimate is the truth ...
    est[1, 0] = 0.0  # ... except row 1 misses class a entirely (Dice 0)
    est[2, 1, 7, 7] = 0.8  # ... and row 2 puts one pixel of an absent class b (Dice 0)
    out = truth_map_recognition(_StubTruthScorer(est), torch.zeros(3, 1, 8, 8), truth, ["s1", "s1", "s2"])
    assert out["n"] == 3
    assert out["per_class"] == pytest.approx({"a": 2 / 3, "b": 2 / 3})
    assert out["dice"] == pytest.approx(4 / 6)
    assert out["by_group"] == pytest.approx({"s1": 0.75, "s2": 0.5})
    # probabilities at or below 0.5 are not the structure; one group only -> no breakdown
    half = truth_map_recognition(_StubTruthScorer(truth * 0.5), torch.zeros(3, 1, 8, 8), truth, ["g"] * 3)
    assert half["per_class"]["a"] == 0.0 and "by_group" not in half


def test_uncertainty_metrics_selective_prediction_by_hand():
    true = np.array([0.9, 0.9, 0.9, 0.9])
    pred = np.array([0.9, 0.85, 0.6, 0.4])  # abs errors 0, 0.05, 0.3, 0.5
    unc = np.array([0.1, 0.2, 0.3, 0.4])  # ranks the errors perfectly
    out = uncertainty_metrics(pred, true, unc, reference=0.25)
    assert out["n"] == 4 and out["spearman_abs_error"] == pytest.approx(1.0)
    assert out["auroc_error"] == pytest.approx(1.0)  # errors > 0.1: the two most uncertain
    assert out["mae_at_coverage"] == pytest.approx({"0.5": 0.025, "0.8": 0.35 / 3, "0.9": 0.85 / 4, "1": 0.85 / 4})
    assert out["unsure_fraction"] == 0.5
    assert out["mae_sure"] == pytest.approx(0.025) and out["mae_unsure"] == pytest.approx(0.4)
    # an uninformative uncertainty: reversed order -> AUROC 0, the certain half holds the errors
    rev = uncertainty_metrics(pred, true, unc[::-1])
    assert rev["auroc_error"] == 0.0 and rev["mae_at_coverage"]["0.5"] == pytest.approx(0.4)
    assert "unsure_fraction" not in rev
    with pytest.raises(ValueError, match="same size"):
        uncertainty_metrics(pred, true, unc[:3])
    # non-finite entries are dropped, not counted as errors
    assert uncertainty_metrics(np.r_[pred, np.nan], np.r_[true, 0.5], np.r_[unc, 0.9])["n"] == 4
