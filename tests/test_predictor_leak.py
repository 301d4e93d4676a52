"""The quality predictor records its training cases; check_predictor_leak refuses leaks."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import tiny_dataset
from test_leak_guard import make_group_csv, make_ssl4mis_like
from qgseg.config import DataConfig, load_config
from qgseg.data.detect import open_dataset
from qgseg.data.io import DataError
from qgseg.data.run_data import RunData, group_of, prepare_run_data
from qgseg.engine.checkpoint import load_checkpoint
from qgseg.quality.leak import check_predictor_leak
from qgseg.quality.training import QualityTrainer


def meta_for(run: RunData) -> dict:
    """The leak-relevant part of QualityTrainer.checkpoint_meta for a predictor trained on ``run``."""
    ds = run.dataset
    return {"task": "quality", "dataset": ds.name, "dataset_root": str(Path(ds.root).resolve()),
            "labeled_ids": sorted(run.labeled), "labeled_groups": sorted({group_of(ds, i) for i in run.labeled})}


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leak") / "ACDC"
    return make_ssl4mis_like(root, train_patients=list(range(1, 9)), val=[9], test=[10, 11])


def test_acdc_predictor_trained_with_7_labeled_refused_in_a_3_labeled_run(acdc_like):
    run7 = prepare_run_data(DataConfig(dataset=str(acdc_like), labeled=7))
    run3 = prepare_run_data(DataConfig(dataset=str(acdc_like), labeled=3))
    with pytest.raises(DataError) as err:
        check_predictor_leak(meta_for(run7), run3, "runs/quality_acdc/checkpoints/best.ckpt")
    msg = str(err.value)
    assert "runs/quality_acdc/checkpoints/best.ckpt" in msg
    assert "unlabeled: 8 case(s)" in msg  # patients 4-7, two slices each
    assert "4 group(s) among its training groups ['patient004', 'patient005', 'patient006', 'patient007']" in msg
    assert "val:" not in msg and "test:" not in msg
    assert "Train the predictor on this run's labeled cases only" in msg
    # the other way round is fine: a 3-labeled predictor learnt from cases a 7-labeled run has labeled
    check_predictor_leak(meta_for(run3), run7, "p.ckpt")
    check_predictor_leak(meta_for(run7), run7, "p.ckpt")


def test_predictor_trained_on_a_test_or_val_patient_is_refused(acdc_like):
    run = prepare_run_data(DataConfig(dataset=str(acdc_like), labeled=3))
    meta = meta_for(run)
    meta["labeled_groups"] = sorted(meta["labeled_groups"] + ["patient010"])  # a test patient (by group)
    with pytest.raises(DataError, match=r"test: 0 case\(s\) among its training cases \[\], 1 group\(s\) .*'patient010'"):
        check_predictor_leak(meta, run, "p.ckpt")
    meta = meta_for(run)
    meta["labeled_ids"] = sorted(meta["labeled_ids"] + ["patient009_frame01"])  # the val volume itself (by id)
    with pytest.raises(DataError, match=r"val: 1 case\(s\) among its training cases \['patient009_frame01'\]"):
        check_predictor_leak(meta, run, "p.ckpt")


def test_demo_data_refusal_and_acceptance(tmp_path):
    data = tiny_dataset(tmp_path / "demo")
    full = prepare_run_data(DataConfig(dataset=str(data)))
    half = prepare_run_data(DataConfig(dataset=str(data), labeled=0.5))
    assert set(half.labeled) < set(full.labeled)
    check_predictor_leak(meta_for(half), full, "half.ckpt")
    check_predictor_leak(meta_for(full), full, "full.ckpt")
    with pytest.raises(DataError, match=rf"full.ckpt .*unlabeled: {len(half.unlabeled) - 4} case"):
        check_predictor_leak(meta_for(full), half, "full.ckpt")  # 4 of half's unlabeled are the unlabeled/ pool


def test_only_the_same_dataset_is_compared(tmp_path):
    data = tiny_dataset(tmp_path / "demo")
    copy = tiny_dataset(tmp_path / "other")  # the same ids in another folder: another dataset
    full = prepare_run_data(DataConfig(dataset=str(data)))
    half = prepare_run_data(DataConfig(dataset=str(data), labeled=0.5))
    other = prepare_run_data(DataConfig(dataset=str(copy)))
    leaky = meta_for(full)
    check_predictor_leak(meta_for(other), half, "other.ckpt")  # same ids, different dataset_root
    no_root = {k: v for k, v in leaky.items() if k != "dataset_root"}
    with pytest.raises(DataError):  # no root recorded: the same name counts as the same dataset
        check_predictor_leak(no_root, half, "p.ckpt")
    check_predictor_leak(dict(no_root, dataset="PH2"), half, "p.ckpt")


def test_checkpoint_without_training_cases_is_refused_unless_allowed(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "demo")
    run = prepare_run_data(DataConfig(dataset=str(data)))
    capsys.readouterr()  # the "splits: ..." line
    old = {"task": "quality", "dataset": run.dataset.name, "classes": run.classes}
    with pytest.raises(DataError, match="old.ckpt does not record its training cases") as err:
        check_predictor_leak(old, run, "old.ckpt")
    assert "guidance.allow_unverified_predictor=true" in str(err.value)
    check_predictor_leak(old, run, "old.ckpt", allow_unverified=True)
    out = capsys.readouterr().out
    assert out.startswith("WARNING") and "old.ckpt" in out and "allow_unverified_predictor" in out
    check_predictor_leak(dict(old, dataset="PH2"), run, "old.ckpt")  # another dataset: nothing to check


def test_extra_unlabeled_dataset_is_checked(tmp_path):
    main = prepare_run_data(DataConfig(dataset=str(tiny_dataset(tmp_path / "main"))))
    rows = [("a1", "pA", "train"), ("b1", "pB", "train"), ("c1", "pC", "val"), ("d1", "pD", "test")]
    pool = open_dataset(make_group_csv(tmp_path / "pool", rows))
    pool_run = prepare_run_data(DataConfig(dataset=str(pool.root / "cases.csv")))
    run = RunData(main.dataset, main.labeled, main.val, main.test, main.unlabeled, unlabeled_dataset=pool)
    with pytest.raises(DataError, match=r"unlabeled \(extra dataset .*pool.*\): 2 case\(s\)"):
        check_predictor_leak(meta_for(pool_run), run, "pool.ckpt")


def test_trained_checkpoint_records_its_training_cases(tmp_path):
    data_dir = tiny_dataset(tmp_path / "data", n_labeled=6, n_unlabeled=0, n_val=2, n_test=2)
    cfg = load_config({
        "name": "leakq", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": str(data_dir), "image_size": [32, 32], "labeled": 0.5},
        "model": {"name": "unet", "features": [4, 8, 16, 32]},
        "runtime": {"accelerator": "cpu", "progress": False},
        "quality": {"depth": 10, "width": [4, 4, 8, 8], "image_size": [32, 32], "masks_per_image": 1, "epochs": 1,
                    "batch_size": 4, "val_every_epochs": 1, "weak_probability": 0.0, "eval_masks_per_image": 1},
    })
    run = prepare_run_data(cfg.data, cfg.output_dir)
    fit = QualityTrainer(cfg, tmp_path / "q", data=run).fit()
    meta = load_checkpoint(fit.best_path)["meta"]
    assert meta["labeled_ids"] == sorted(run.labeled) and len(run.labeled) == 3
    assert meta["labeled_groups"] == sorted({group_of(run.dataset, i) for i in run.labeled})
    assert meta["dataset"] == run.dataset.name and meta["dataset_root"] == str(Path(data_dir).resolve())
    for key in ("labeled_ids", "labeled_groups", "dataset_root", "dataset"):
        assert meta[key] == meta_for(run)[key]
    check_predictor_leak(meta, run, str(fit.best_path))
    with pytest.raises(DataError, match="unlabeled: 3 case"):  # a run in which its training cases are unlabeled
        check_predictor_leak(meta, RunData(run.dataset, [], run.val, run.test, run.labeled), str(fit.best_path))


def test_frame_ids_that_look_like_sequence_names_are_no_leak(tmp_path):
    """CVC-ColonDB names frames 1..380 and sequences 1..15: labeled frame '3' is not validation
    sequence '3' (ids are compared with ids, groups with groups)."""
    rows = [("1", "1", "train"), ("2", "1", "train"), ("3", "2", "train"), ("4", "2", "train"),
            ("5", "3", "val"), ("6", "3", "val"), ("7", "4", "test"), ("8", "4", "test")]
    run = prepare_run_data(DataConfig(dataset=str(make_group_csv(tmp_path, rows))))
    assert run.val == ["5", "6"] and {group_of(run.dataset, i) for i in run.val} == {"3"}
    check_predictor_leak(meta_for(run), run, "p.ckpt")  # labeled frame '3' vs val sequence '3'
    meta = meta_for(run)
    meta["labeled_groups"] = sorted(meta["labeled_groups"] + ["3"])  # trained on the val sequence itself
    with pytest.raises(DataError, match=r"val: 0 case\(s\) .*1 group\(s\) among its training groups \['3'\]"):
        check_predictor_leak(meta, run, "p.ckpt")
