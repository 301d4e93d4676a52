"""`qgseg compare`: the pure aggregation on hand-made results, and one real tiny grid."""
import json
import math
import sys

import pytest
import yaml
from helpers import tiny_dataset

from qgseg.cli.main import main
from qgseg.compare import (
    LOG_FILE,
    RunSpec,
    _env,
    _execute,
    aggregate,
    base_of,
    find_base,
    format_markdown,
    gpu_slots,
    write_outputs,
)


def fake(dice, hd95=5.0, wall=10.0, classes=None):
    """The part of a `qgseg run` result.json that the comparison reads."""
    classes = classes or {"lesion": dice}
    return {"best_val_dice": dice, "wall_s": wall,
            "test": {"unit": "pixels", "n": 3,
                     "mean_foreground": {"dice": {"mean": dice, "std": 0.1}, "hd95": {"mean": hd95, "std": 1.0}},
                     "classes": {c: {"dice": {"mean": d, "std": 0.1}} for c, d in classes.items()}}}


def test_base_of_each_guided_variant():
    assert base_of("mt-qw") == "mt" and base_of("mt+qar") == "mt" and base_of("mt-qw+qar") == "mt"
    assert base_of("qar") == "sup" and base_of("fixmatch-qw+qar") == "fixmatch" and base_of("pl-qw") == "pl"
    assert base_of("mt") is None and base_of("sup") is None and base_of("pl-c") is None
    assert find_base("pl-qw", ["pl-c", "pl-qw"]) == "pl-c"  # aliases pair up
    assert find_base("qar", ["sup", "qar"]) == "sup"
    assert find_base("cps-qw", ["sup", "cps-qw"]) is None  # its base is not in the grid


def test_aggregate_by_hand():
    results = {("sup", 0): fake(0.80, hd95=4.0, wall=10), ("sup", 1): fake(0.82, hd95=6.0, wall=20),
               ("sup", 2): fake(0.84, hd95=5.0, wall=30),
               ("mt", 0): fake(0.81), ("mt", 1): fake(0.85), ("mt", 2): fake(0.83),
               ("mt-qw", 0): fake(0.83), ("mt-qw", 1): fake(0.84),  # seed 2 missing (not run yet)
               ("qar", 0): fake(0.85), ("qar", 1): None, ("qar", 2): fake(0.83)}  # seed 1 failed
    t = aggregate(results, ["sup", "mt", "mt-qw", "qar"], [0, 1, 2])
    sup = t["methods"]["sup"]
    assert sup["dice"] == pytest.approx(0.82) and sup["dice_std"] == pytest.approx(0.02)  # sample std
    assert sup["hd95"] == pytest.approx(5.0) and sup["hd95_std"] == pytest.approx(1.0)
    assert sup["wall_s"] == pytest.approx(20.0) and sup["seeds"] == [0, 1, 2] and sup["failed"] == []
    assert sup["wall_per_seed"] == {0: 10.0, 1: 20.0, 2: 30.0}  # each run's own wall, not only their mean
    assert t["methods"]["mt-qw"]["seeds"] == [0, 1] and t["methods"]["qar"]["failed"] == [1]
    assert t["methods"]["qar"]["seeds"] == [0, 2] and t["methods"]["qar"]["per_seed"] == {0: 0.85, 2: 0.83}
    assert set(t["guided_vs_base"]) == {"mt-qw", "qar"}
    g = t["guided_vs_base"]["mt-qw"]  # paired over seeds 0, 1: +0.02, -0.01
    assert g["base"] == "mt" and g["n"] == 2 and g["wins"] == 1
    assert g["diff"] == pytest.approx(0.005) and g["diff_std"] == pytest.approx(math.sqrt(2 * 0.015 ** 2))
    g = t["guided_vs_base"]["qar"]  # paired over seeds 0, 2: +0.05, -0.01
    assert g["base"] == "sup" and g["n"] == 2 and g["wins"] == 1
    assert g["diff"] == pytest.approx(0.02) and g["diff_std"] == pytest.approx(math.sqrt(2 * 0.03 ** 2))

    md = format_markdown(t)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"variant", "sup", "mt", "mt-qw", "qar"}
    assert "0.820 ± 0.020" in rows["sup"] and "5.00 ± 1.00" in rows["sup"] and "3/3" in rows["sup"]
    assert "+0.005 ± 0.021 vs mt" in rows["mt-qw"] and "| 1/2 |" in rows["mt-qw"] and "2/3" in rows["mt-qw"]
    assert "FAILED: s1" in rows["qar"] and "+0.020 ± 0.042 vs sup" in rows["qar"]
    assert "HD95 (px)" in rows["variant"] and "Dice lesion" not in rows["variant"]  # one class: no per-class columns
    assert "FAILED runs" in md and "qar s1" in md


def test_aggregate_single_seed_multiclass_and_a_variant_with_nothing_done(tmp_path):
    results = {("sup", 0): fake(0.7, classes={"RV": 0.6, "LV": 0.8}),
               ("mt-qw", 0): fake(0.75, classes={"RV": 0.65, "LV": 0.85}), ("mt", 0): None}
    t = aggregate(results, ["sup", "mt", "mt-qw"], [0])
    assert t["methods"]["sup"]["dice_std"] is None  # one seed: no spread to report (not 0, not nan)
    assert t["methods"]["sup"]["per_class"] == {"RV": {"dice": 0.6, "dice_std": None},
                                                "LV": {"dice": 0.8, "dice_std": None}}
    assert t["methods"]["mt"]["dice"] is None and t["methods"]["mt"]["failed"] == [0]
    assert t["guided_vs_base"]["mt-qw"]["n"] == 0 and t["guided_vs_base"]["mt-qw"]["diff"] is None
    md = format_markdown(t)
    assert "Dice RV" in md and "Dice LV" in md and "| 0.850 |" in md and "0.850 ±" not in md  # one seed: no ± 0
    paths = write_outputs(t, tmp_path / "grid", {"predictor": "p.ckpt"})
    assert all(p.is_file() for p in paths.values())
    saved = json.loads(paths["json"].read_text())
    assert saved["methods"]["sup"]["per_seed"] == {"0": 0.7} and saved["predictor"] == "p.ckpt"
    assert saved["methods"]["mt"]["dice"] is None and saved["guided_vs_base"]["mt-qw"]["base"] == "mt"
    assert paths["csv"].read_text().splitlines()[0].startswith("variant,dice_mean,dice_std,dice_RV_mean")


def test_failed_run_reports_its_log_tail(tmp_path):
    import queue
    import threading

    slots = queue.Queue()
    slots.put(None)
    spec = RunSpec("mt", 0, tmp_path / "mt_s0", [sys.executable, "-c", "print('boom at step 3'); raise SystemExit(3)"])
    out = _execute(spec, slots, threading.Event(), fresh_log=True)
    assert out.status == "failed" and out.returncode == 3 and "boom at step 3" in out.log_tail
    assert "boom at step 3" in (tmp_path / "mt_s0" / LOG_FILE).read_text()
    assert slots.get_nowait() is None  # the slot was handed back


def test_jobs_are_spread_over_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert gpu_slots(2) == [None, None]
    assert _env(None)["OMP_NUM_THREADS"] == "1" and _env(None)["MKL_NUM_THREADS"] == "1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots(5) == ["0", "1", "0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert gpu_slots(3) == ["4", "6", "4"]
    assert _env("6")["CUDA_VISIBLE_DEVICES"] == "6"


def test_tiny_grid_end_to_end_and_resumes(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", n_labeled=6, n_unlabeled=8)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": str(data), "image_size": [32, 32]}, "model": {"features": [8, 16, 32]},
        "train": {"batch_size": 4, "iterations": 6, "val_every": 3},
        "runtime": {"progress": False, "accelerator": "cpu"}, "eval": {"overlays": 1},
        "quality": {"depth": 10, "width": [4, 4, 8, 8], "image_size": [32, 32], "masks_per_image": 1, "epochs": 1,
                    "batch_size": 4, "weak_probability": 0.0, "eval_masks_per_image": 1,
                    "eval_real_networks": False},
        "guidance": {"qar_start": 0.0}}))
    argv = ["compare", str(config), "--methods", "sup,qar", "--seeds", "0", "--jobs", "2",
            "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    grid = tmp_path / "out" / "tiny_compare"
    for rel in ["comparison.md", "comparison.csv", "comparison.json", "comparison.png", "quality/phase1.json",
                "quality/checkpoints/best.ckpt"]:
        assert (grid / rel).is_file(), rel
    predictor = str((grid / "quality" / "checkpoints" / "best.ckpt").resolve())
    for name in ("sup_s0", "qar_s0"):
        run = grid / "runs" / name
        assert (run / "result.json").is_file() and (run / "segmenter" / "checkpoints" / "best.ckpt").is_file()
        log = (run / LOG_FILE).read_text()
        assert f"--predictor {predictor}" in log and "phase 1" not in log  # the grid's predictor, no retraining
        assert f"{name}: done" in out
    saved = json.loads((grid / "comparison.json").read_text())
    assert saved["predictor"] == predictor and set(saved["methods"]) == {"sup", "qar"}
    assert saved["guided_vs_base"]["qar"]["base"] == "sup" and saved["guided_vs_base"]["qar"]["n"] == 1
    md = (grid / "comparison.md").read_text()
    assert "| sup |" in md and "| qar |" in md and "vs sup" in md

    stamps = {p: p.stat().st_mtime_ns for p in grid.rglob("*") if p.is_file() and "comparison" not in p.name}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sup_s0: skipped" in out and "qar_s0: skipped" in out and "reusing the grid's quality predictor" in out
    assert "| sup |" in out and "| qar |" in out
    changed = [str(p) for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert not changed, f"the second call touched {changed}"
