"""benchmarks/study_backbones.py: seeds run here join the committed ones, and the accuracy shown is that of the
predictor that guided the runs (a retrained predictor is not silently credited with the committed runs)."""
import json
import sys
from pathlib import Path

from test_benchmark_common import load_bench


def _quality_run(path: Path, fixed_mae: float) -> Path:
    (path / "eval").mkdir(parents=True)
    (path / "eval" / "quality_eval.json").write_text(json.dumps({
        "ph2_fixed": {"all": {"mae": fixed_mae, "spearman": 0.8, "auroc_0.7": 0.99}},
        "synthetic": {"all": {"mae": fixed_mae - 0.01, "spearman": 0.9}}}))
    (path / "train_history.json").write_text(json.dumps({"best_metric": 0.04}))
    return path


def _grid(path: Path, per_seed: dict[str, float], wall_s: float | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "comparison.json").write_text(json.dumps({"methods": {m: {"per_seed": per_seed, "wall_s": wall_s}
                                                                  for m in ("mt-qw", "qar")}}))
    return path


def _entry(fixed_mae: float, per_seed: dict[str, float]) -> dict:
    return {"best_val_mae": 0.03, "fixed_mae": fixed_mae, "fixed_spearman": 0.85, "fixed_auroc_0.7": 0.995,
            "synthetic_mae": 0.04, "synthetic_spearman": 0.91, "predictor_wall_s": 160.0,
            **{m: {"dice": sum(per_seed.values()) / len(per_seed), "per_seed": per_seed} for m in ("mt-qw", "qar")}}


def test_seeds_run_here_join_the_committed_ones_and_the_committed_predictor_is_named(tmp_path):
    bb = load_bench("study_backbones")
    quality = _quality_run(tmp_path / "q_resnet10", fixed_mae=0.05)  # retrained: other accuracy
    grid = _grid(tmp_path / "grid_resnet10", {"1": 0.92, "2": 0.94})

    r = bb.collect(quality, grid, ["0", "1", "2"], _entry(0.044, {"0": 0.90}))

    assert r["mt-qw"]["per_seed"] == {"0": 0.90, "1": 0.92, "2": 0.94} and abs(r["qar"]["dice"] - 0.92) < 1e-9
    assert r["fixed_mae"] == 0.05  # the predictor that guided the runs made here
    assert r["carried_predictor"]["fixed_mae"] == 0.044 and r["carried_predictor"]["seeds"] == [0]
    assert r["carried_over"] == {"mt-qw": [0], "qar": [0]}
    assert "fixed-mask MAE 0.0440" in bb.carried_text(r)
    # the report regenerated from that result (now committed) still names the predictor of seed 0
    again = bb.collect(quality, grid, ["0", "1", "2"], {**_entry(0.05, {"0": 0.90, "1": 0.92, "2": 0.94}),
                                                        "carried_predictor": r["carried_predictor"]})
    assert again["carried_predictor"] == r["carried_predictor"] and again["fixed_mae"] == 0.05
    # a seed run here wins over the committed value; nothing carried, nothing to name
    r = bb.collect(quality, grid, ["1"], _entry(0.044, {"1": 0.5}))
    assert r["qar"]["per_seed"] == {"1": 0.92} and "carried_over" not in r and "carried_predictor" not in r
    # only committed seeds asked for: the row shows the committed predictor that judged them
    r = bb.collect(quality, grid, ["0"], _entry(0.044, {"0": 0.90}))
    assert r["fixed_mae"] == 0.044 and "carried_predictor" not in r and r["carried_over"] == {"mt-qw": [0], "qar": [0]}


def test_regenerating_keeps_each_seeds_wall_and_gives_none_to_a_seed_of_unknown_wall(tmp_path):
    """Seed 0 was carried from a result that kept only a mean wall; a regenerated report must neither invent
    a wall for it (the mean of the runs here) nor change the others: the same call twice, the same row."""
    bb = load_bench("study_backbones")
    quality = _quality_run(tmp_path / "q_resnet10", fixed_mae=0.05)
    grid = _grid(tmp_path / "grid_resnet10", {"1": 0.92, "2": 0.94}, wall_s=240.0)
    committed = _entry(0.05, {"0": 0.90, "1": 0.92, "2": 0.94})
    for m in ("mt-qw", "qar"):
        committed[m] |= {"wall_s": 240.0, "wall_per_seed": {"1": 240.0, "2": 240.0}}

    r = bb.collect(quality, grid, ["0", "1", "2"], committed)

    assert r["mt-qw"]["wall_per_seed"] == {"1": 240.0, "2": 240.0} and r["mt-qw"]["wall_s"] == 240.0
    again = bb.collect(quality, grid, ["0", "1", "2"], {**committed, **{m: r[m] for m in ("mt-qw", "qar")}})
    assert again["qar"] == r["qar"]


def test_a_committed_study_result_named_as_grid_is_carried_with_the_committed_accuracy(tmp_path, monkeypatch):
    """ResNet-18's guided runs are the study grid's; in a checkout without that grid, ``GRID`` may name the
    committed ``study_ph2`` result. Its runs were judged by the committed predictor, so that accuracy is shown,
    not the one of a retrained quality run here."""
    bb = load_bench("study_backbones")
    study = {"methods": {m: {"per_seed": {"0": 0.92, "1": 0.93, "2": 0.91}} for m in ("mt-qw", "qar", "mt")}}
    monkeypatch.setattr(bb, "committed_result", lambda name: study if name == "study_ph2" else None)
    quality = _quality_run(tmp_path / "q_ssl_ph2", fixed_mae=0.0452)

    r = bb.collect(quality, Path("study_ph2"), ["0", "1", "2"], _entry(0.0442, {"0": 0.92}))

    assert r["mt-qw"]["per_seed"] == {"0": 0.92, "1": 0.93, "2": 0.91}
    assert r["fixed_mae"] == 0.0442 and "carried_predictor" not in r
    assert r["carried_over"] == {"mt-qw": [0, 1, 2], "qar": [0, 1, 2]}
    try:
        bb.collect(tmp_path / "gone", tmp_path / "gone_grid", ["0"], None)
        raise AssertionError("a backbone with neither runs nor a committed result was tabulated")
    except SystemExit as e:
        assert "gone/eval/quality_eval.json: not found" in str(e)


def test_a_report_in_a_fresh_checkout_keeps_every_committed_backbone_and_seed(tmp_path, monkeypatch):
    bb = load_bench("study_backbones")
    monkeypatch.setitem(bb.write_result.__globals__, "RESULTS", tmp_path)  # common's results folder
    monkeypatch.delenv("QGSEG_BENCH_REPLACE", raising=False)
    committed = {"backbones": {"resnet10": _entry(0.044, {"0": 0.90}), "densenet121": _entry(0.055, {"0": 0.91})},
                 "seeds": "0", "note": "trained at d170e25"}
    (tmp_path / "study_backbones_ph2.json").write_text(json.dumps(committed))
    out = tmp_path / "runs"
    _quality_run(out / "q_resnet10", fixed_mae=0.05)
    _grid(out / "grid_resnet10", {"1": 0.92}, wall_s=240.0)
    monkeypatch.setattr(sys, "argv", ["study_backbones.py", "resnet10", "--seeds", "0,1", "--report-only",
                                      "--output-dir", str(out)])

    bb.main()

    written = json.loads((tmp_path / "study_backbones_ph2.json").read_text())
    r10, d121 = written["backbones"]["resnet10"], written["backbones"]["densenet121"]
    assert r10["qar"]["per_seed"] == {"0": 0.90, "1": 0.92} and r10["carried_predictor"]["seeds"] == [0]
    assert r10["predictor_wall_s"] == 160.0  # not retrained by this call: the committed wall time
    assert d121["qar"]["per_seed"] == {"0": 0.91} and "not asked for" in d121["carried_over"]
    assert written["note"] == "trained at d170e25"
    table = (tmp_path / "study_backbones_ph2.md").read_text()
    assert "| resnet10: carried over | mt-qw seeds 0; qar seeds 0 (judged by a predictor of fixed-mask MAE 0.0440" in table
    # per-run wall of the guided runs (only the runs here have one) and the phase-1 wall; the call's own
    # wall is labelled as such, not passed off as a run's
    assert r10["qar"]["wall_s"] == 240.0 and "QAR Dice 0.9100 ± 0.0141 (2 seeds, 240 s/run); phase 1 160 s" in table
    assert "| wall s of this call |" in table and "(--report-only: tabulation only)" in table
