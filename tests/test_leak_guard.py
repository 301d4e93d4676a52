"""Leak guard by group: a patient / video sequence is in one role of a run only."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import tiny_dataset
from qgseg.config import DataConfig
from qgseg.data.io import DataError
from qgseg.data.run_data import RunData, check_no_leak, prepare_run_data

RNG = np.random.default_rng(0)


def make_ssl4mis_like(root: Path, train_patients: list[int], val: list[int], test: list[int],
                      slices_per_patient: int = 2) -> Path:
    """A tiny ACDC-like SSL4MIS layout: 2D training slices, 3D val/test volumes."""
    (root / "data" / "slices").mkdir(parents=True)
    slices = []
    for p in train_patients:
        for k in range(slices_per_patient):
            name = f"patient{p:03d}_frame01_slice_{k}"
            with h5py.File(root / "data" / "slices" / f"{name}.h5", "w") as f:
                f["image"] = RNG.random((16, 12)).astype(np.float32)
                f["label"] = (RNG.random((16, 12)) * 4).astype(np.uint8)
            slices.append(name)
    volumes = {"val": [f"patient{p:03d}_frame01" for p in val], "test": [f"patient{p:03d}_frame02" for p in test]}
    for name in volumes["val"] + volumes["test"]:
        with h5py.File(root / "data" / f"{name}.h5", "w") as f:
            f["image"] = RNG.random((3, 16, 12)).astype(np.float32)
            f["label"] = (RNG.random((3, 16, 12)) * 4).astype(np.uint8)
    (root / "train_slices.list").write_text("\n".join(slices) + "\n")
    (root / "val.list").write_text("\n".join(volumes["val"]) + "\n")
    (root / "test.list").write_text("\n".join(volumes["test"]) + "\n")
    return root


def make_group_csv(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A CSV dataset (case_id, group, split) over the images of a tiny demo dataset."""
    demo = tiny_dataset(root / "demo", n_labeled=len(rows), n_unlabeled=0, n_val=0, n_test=0)
    images = sorted((demo / "images").iterdir())
    lines = ["case_id,image_path,mask_path,group,split"]
    for (cid, group, split), img in zip(rows, images):
        lines.append(f"{cid},demo/images/{img.name},demo/masks/{img.name},{group},{split}")
    csv_path = root / "cases.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def test_ssl4mis_layout_without_leak_passes(tmp_path):
    root = make_ssl4mis_like(tmp_path / "ACDC", train_patients=[1, 2, 3, 4], val=[5], test=[6, 7])
    run = prepare_run_data(DataConfig(dataset=str(root), labeled=2))
    assert len(run.labeled) == 4 and len(run.unlabeled) == 4 and run.test == ["patient006_frame02", "patient007_frame02"]
    check_no_leak(run)


def test_test_patient_with_a_training_slice_is_refused(tmp_path):
    # patient 3's slices are training slices (unlabeled with labeled=2), and its volume is a test case:
    # slice ids never equal volume ids, only the patient group reveals the leak
    root = make_ssl4mis_like(tmp_path / "ACDC", train_patients=[1, 2, 3, 4], val=[5], test=[3, 6])
    with pytest.raises(DataError, match=r"test and unlabeled share 1 group\(s\) \['patient003'\]"):
        prepare_run_data(DataConfig(dataset=str(root), labeled=2))
    with pytest.raises(DataError, match=r"test and labeled share 1 group\(s\) \['patient003'\]"):
        prepare_run_data(DataConfig(dataset=str(root), labeled=3))


def test_val_patient_in_training_is_refused(tmp_path):
    root = make_ssl4mis_like(tmp_path / "ACDC", train_patients=[1, 2, 3, 4], val=[1, 2, 5], test=[6])
    with pytest.raises(DataError, match=r"val and labeled share 2 group\(s\) \['patient001', 'patient002'\]") as err:
        prepare_run_data(DataConfig(dataset=str(root), labeled=2))
    assert "test and" not in str(err.value)


def test_csv_groups_leak_between_test_and_val(tmp_path):
    rows = [("a1", "pA", "train"), ("a2", "pA", "train"), ("b1", "pB", "train"), ("c1", "pC", "val"),
            ("c2", "pC", "test"), ("d1", "pD", "test")]
    csv_path = make_group_csv(tmp_path, rows)
    with pytest.raises(DataError, match=r"test and val share 1 group\(s\) \['pC'\]"):
        prepare_run_data(DataConfig(dataset=str(csv_path)))
    # the same cases, pC's frames both in test: accepted
    rows[3] = ("c1", "pC", "test")
    prepare_run_data(DataConfig(dataset=str(make_group_csv(tmp_path / "ok", rows))))


def test_many_overlapping_groups_are_counted_and_the_first_few_named(tmp_path):
    rows = [(f"t{i}", f"g{i}", "train") for i in range(8)] + [(f"x{i}", f"g{i}", "test") for i in range(7)]
    rows += [("v0", "gv", "val")]
    csv_path = make_group_csv(tmp_path, rows)
    with pytest.raises(DataError, match=r"test and labeled share 7 group\(s\) \['g0', 'g1', 'g2', 'g3', 'g4'\]\W"):
        prepare_run_data(DataConfig(dataset=str(csv_path)))


def test_extra_unlabeled_dataset_must_not_hold_main_cases(tmp_path):
    main = tiny_dataset(tmp_path / "main")
    clean = tiny_dataset(tmp_path / "pool", seed=1)  # same generator, ids demo_XXXX collide with main
    run = prepare_run_data(DataConfig(dataset=str(main)))
    assert run.unlabeled_dataset is None
    with pytest.raises(DataError, match=r"extra unlabeled dataset .*pool.* and labeled share \d+ case id"):
        prepare_run_data(DataConfig(dataset=str(main), unlabeled=str(clean / "images")))
    # an unlabeled pool with its own ids is fine
    pool = tmp_path / "other_pool" / "images"
    pool.mkdir(parents=True)
    for img in sorted((clean / "images").iterdir())[:3]:
        (pool / f"isic_{img.name}").write_bytes(img.read_bytes())
    run = prepare_run_data(DataConfig(dataset=str(main), unlabeled=str(pool)))
    assert run.unlabeled_dataset is not None and len(run.unlabeled_dataset.ids) == 3


def test_check_no_leak_on_a_hand_made_run(tmp_path):
    run = prepare_run_data(DataConfig(dataset=str(tiny_dataset(tmp_path / "d"))))
    check_no_leak(run)
    leaky = RunData(run.dataset, run.labeled, run.val + run.labeled[:1], run.test, run.unlabeled)
    with pytest.raises(DataError, match="val and labeled share 1 group"):
        check_no_leak(leaky)
