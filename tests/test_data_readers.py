"""Dataset readers and layout detection, on tiny synthetic layouts and (when present) real data."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import require
from qgseg.data import (
    DataError,
    SegDataset,
    open_dataset,
    read_csv_list,
    read_dataset_yaml,
    read_folder,
    read_msd,
    read_ssl4mis,
    read_unlabeled_folder,
)

RNG = np.random.default_rng(1)


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_folder(root: Path, ids: list[str], mask_suffix: str = "", size: int = 10) -> Path:
    for i in ids:
        save_png(root / "images" / f"{i}.png", RNG.integers(0, 256, (size, size, 3), dtype=np.uint8))
        m = np.zeros((size, size), np.uint8)
        m[2:5, 2:5] = 255
        save_png(root / "masks" / f"{i}{mask_suffix}.png", m)
    return root


def save_nii(path: Path, arr: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 2.5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), path)


# ----------------------------------------------------------------------------- folder


def test_read_folder_with_splits_groups_and_unlabeled(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "set", ["1", "2", "10", "3"], mask_suffix="")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("1\n2\n10\n")
    (root / "splits" / "test.txt").write_text("3.png\n")
    (root / "sequences.csv").write_text("frame,sequence\n1,1\n2,1\n3,2\n10,2\n")
    save_png(root / "unlabeled" / "images" / "u1.png", RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    ds = read_folder(root)
    assert isinstance(ds, SegDataset) and ds.name == "set"
    assert ds.ids == ["1", "2", "3", "10", "u1"]  # natural order
    assert ds.splits == {"test": ["3"], "train": ["1", "2", "10"], "unlabeled": ["u1"]}
    assert ds.groups["10"] == "2" and ds.groups["u1"] is None
    assert ds.classes == ["background", "foreground"] and ds.num_classes == 2 and ds.spatial_dims == 2
    assert not ds.problems and ds.has_labels("1") and not ds.has_labels("u1")
    case = ds.load("10")
    assert case.image.shape == (3, 10, 10) and case.label.max() == 1 and case.group == "2"
    assert len(list(ds)) == 5 and ds[4].label is None
    sub = ds.subset(["3", "1"], name="small")
    assert sub.ids == ["3", "1"] and sub.splits == {"test": ["3"], "train": ["1"]} and sub.name == "small"


def test_read_folder_unpaired_are_problems_not_errors(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", ["a", "b"], mask_suffix="_mask")
    save_png(root / "images" / "c.png", np.zeros((10, 10), np.uint8))
    save_png(root / "masks" / "zz.png", np.zeros((10, 10), np.uint8))
    ds = read_folder(root)
    assert ds.ids == ["a", "b"]
    msgs = [str(p) for p in ds.problems]
    assert any("c.png: image has no matching mask" in m for m in msgs)
    assert any("zz.png: mask has no matching image" in m for m in msgs)


def test_read_folder_mask_pattern_and_classes(tmp_path: Path) -> None:
    root = tmp_path / "p"
    for i in ("x", "y"):
        save_png(root / "img" / f"{i}.png", np.zeros((8, 8), np.uint8))
        lab = np.zeros((8, 8), np.uint8)
        lab[0, :3] = [0, 1, 2]
        save_png(root / "lab" / f"{i}_seg.png", lab)
    ds = read_folder(root, images_dir="img", masks_dir="lab", mask_pattern="{stem}_seg", classes=["bg", "a", "b"])
    assert ds.ids == ["x", "y"] and ds.load("x").label.max() == 2
    ds2 = read_folder(root, images_dir="img", masks_dir="lab", mask_pattern="{stem}_seg")  # binary default
    with pytest.raises(DataError, match=r"x_seg\.png: unexpected label values \[2\]"):
        ds2.load("x")


def test_folder_without_masks_and_unlabeled_reader(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / "pool" / "images" / f"im{i}.jpg", RNG.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    ds = read_folder(tmp_path / "pool")
    assert ds.splits == {"unlabeled": ["im0", "im1", "im2"]} and not ds.problems
    flat = tmp_path / "flat"
    for i in range(2):
        save_png(flat / f"f{i}.png", np.zeros((9, 9), np.uint8))
    ds = read_unlabeled_folder(flat)
    assert ds.ids == ["f0", "f1"] and ds.splits["unlabeled"] == ["f0", "f1"] and ds.load("f1").label is None


# ----------------------------------------------------------------------------- csv / yaml


def test_read_csv_list(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", ["a", "b", "c"])
    (tmp_path / "lists").mkdir()
    csv_path = tmp_path / "lists" / "cases.csv"
    csv_path.write_text(
        "image_path,mask_path,group,split\n"
        "../d/images/a.png,../d/masks/a.png,g1,train\n"
        "../d/images/b.png,,g1,unlabeled\n"
        "../d/images/c.png,../d/masks/c.png,g2,test\n"
        "../d/images/missing.png,,g3,train\n"
    )
    ds = read_csv_list(csv_path)
    assert ds.ids == ["a", "b", "c"]
    assert ds.splits == {"train": ["a"], "unlabeled": ["b"], "test": ["c"]}
    assert ds.groups == {"a": "g1", "b": "g1", "c": "g2"}
    assert not ds.has_labels("b") and ds.load("a").label.shape == (10, 10)
    assert len(ds.problems) == 1 and "missing.png" in str(ds.problems[0])


def test_read_dataset_yaml(tmp_path: Path) -> None:
    make_folder(tmp_path / "data" / "ph", ["1", "2"], mask_suffix="_lesion")
    y = tmp_path / "cfg" / "ds.yaml"
    y.parent.mkdir()
    y.write_text("format: folder\nroot: ../data/ph\nname: tiny\nclasses: [background, lesion]\n")
    ds = read_dataset_yaml(y)
    assert ds.name == "tiny" and ds.classes == ["background", "lesion"] and len(ds) == 2
    assert open_dataset(y).ids == ["1", "2"]
    y.write_text("format: folder\nroot: ../data/ph\nbogus_option: 1\n")
    with pytest.raises(DataError, match="bogus_option"):
        read_dataset_yaml(y)
    y.write_text("format: zarr\nroot: .\n")
    with pytest.raises(DataError, match="unknown or missing format 'zarr'"):
        read_dataset_yaml(y)


# ----------------------------------------------------------------------------- msd / nnU-Net


def test_read_msd_4d(tmp_path: Path) -> None:
    root = tmp_path / "Task01_Tiny"
    labels = {"0": "background", "1": "edema", "2": "tumour"}
    training = []
    for i in range(2):
        save_nii(root / "imagesTr" / f"t_{i:03d}.nii.gz", RNG.normal(size=(6, 7, 4, 2)).astype(np.float32))
        lab = np.zeros((6, 7, 4), np.uint8)
        lab[1:3, 1:3, 1] = 2
        save_nii(root / "labelsTr" / f"t_{i:03d}.nii.gz", lab)
        training.append({"image": f"./imagesTr/t_{i:03d}.nii.gz", "label": f"./labelsTr/t_{i:03d}.nii.gz"})
    save_nii(root / "imagesTs" / "t_100.nii.gz", RNG.normal(size=(6, 7, 4, 2)).astype(np.float32))
    (root / "dataset.json").write_text(json.dumps(
        {"name": "Tiny", "labels": labels, "modality": {"0": "FLAIR", "1": "T1w"}, "training": training}))
    ds = open_dataset(root)
    assert ds.name == "Tiny" and ds.classes == ["background", "edema", "tumour"] and ds.spatial_dims == 3
    assert ds.ids == ["t_000", "t_001", "t_100"] and ds.splits == {"test_unlabeled": ["t_100"]}
    case = ds.load("t_001")
    assert case.image.shape == (2, 6, 7, 4) and case.label.shape == (6, 7, 4) and case.spacing == (1.0, 1.0, 2.5)
    assert ds.load("t_100").label is None


def test_read_nnunet_v2_channels_2d_and_3d(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_X"
    for cid in ("case_a", "case_b"):
        for c in range(2):
            save_nii(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", np.full((5, 6, 3), c, np.float32))
        save_nii(root / "labelsTr" / f"{cid}.nii.gz", np.ones((5, 6, 3), np.uint8))
    save_nii(root / "imagesTr" / "case_c_0000.nii.gz", np.zeros((5, 6, 3), np.float32))  # channel 1 missing
    save_nii(root / "labelsTr" / "case_c.nii.gz", np.ones((5, 6, 3), np.uint8))
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("case_b\n")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "organ": 1},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    ds = read_msd(root)
    assert ds.ids == ["case_a", "case_b"] and ds.classes == ["background", "organ"] and ds.spatial_dims == 3
    assert ds.splits == {"val": ["case_b"]}
    assert any("case_c_0001.nii.gz" in str(p) for p in ds.problems)
    case = ds.load("case_a")
    assert case.image.shape == (2, 5, 6, 3) and case.image[1].max() == 1

    root2 = tmp_path / "Dataset002_Y"  # single-slice 2D NIfTI
    save_nii(root2 / "imagesTr" / "s1_0000.nii.gz", np.zeros((8, 9, 1), np.float32), (0.8, 0.8, 1.0))
    save_nii(root2 / "labelsTr" / "s1.nii.gz", np.ones((8, 9, 1), np.uint8), (0.8, 0.8, 1.0))
    (root2 / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}}))
    ds2 = open_dataset(root2)
    assert ds2.spatial_dims == 2
    case = ds2.load("s1")
    assert case.image.shape == (1, 8, 9) and case.spacing == (0.8, 0.8) and case.label.shape == (8, 9)


# ----------------------------------------------------------------------------- ssl4mis


def make_ssl4mis(root: Path) -> Path:
    (root / "data" / "slices").mkdir(parents=True)
    slices = ["patient002_frame01_slice_0", "patient002_frame01_slice_1", "patient001_frame01_slice_0"]
    for s in slices:
        with h5py.File(root / "data" / "slices" / f"{s}.h5", "w") as f:
            f["image"] = RNG.random((16, 12)).astype(np.float32)
            f["label"] = np.eye(16, 12, dtype=np.uint8) * 2
    for v in ("patient005_frame01", "patient009_frame02"):
        with h5py.File(root / "data" / f"{v}.h5", "w") as f:
            f["image"] = RNG.random((3, 16, 12)).astype(np.float32)
            f["label"] = np.full((3, 16, 12), 2, np.uint8)
    (root / "train_slices.list").write_text("\n".join(slices) + "\n")
    (root / "train.list").write_text("patient002_frame01\npatient001_frame01\n")  # volumes absent: fine
    (root / "val.list").write_text("patient005_frame01\n")
    (root / "test.list").write_text("patient009_frame02\n")
    return root


def test_read_ssl4mis(tmp_path: Path) -> None:
    ds = open_dataset(make_ssl4mis(tmp_path / "mini"))
    assert ds.splits["train"] == ["patient002_frame01_slice_0", "patient002_frame01_slice_1", "patient001_frame01_slice_0"]
    assert ds.splits["val"] == ["patient005_frame01"] and ds.splits["test"] == ["patient009_frame02"]
    assert ds.groups["patient002_frame01_slice_1"] == "patient002" and not ds.problems
    assert ds.classes == ["background", "class1", "class2"]  # inferred from val volume labels
    s = ds.load("patient001_frame01_slice_0")
    assert s.image.shape == (1, 16, 12) and s.meta["kind"] == "slice" and s.spacing is None
    v = ds.load("patient009_frame02")
    assert v.image.shape == (1, 3, 16, 12) and v.label.shape == (3, 16, 12) and v.meta["kind"] == "volume"
    assert read_ssl4mis(tmp_path / "mini", classes=5).num_classes == 5


# ----------------------------------------------------------------------------- detection


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unrecognised dataset layout; expected"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "noimg" / "images").mkdir(parents=True)
    (tmp_path / "noimg" / "masks").mkdir()
    with pytest.raises(DataError, match="no cases found"):
        open_dataset(tmp_path / "noimg")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported dataset file"):
        open_dataset(tmp_path / "x.txt")
    make_folder(tmp_path / "ok", ["a"])
    assert len(open_dataset(tmp_path / "ok")) == 1
    with pytest.raises(DataError, match="unknown option .not_an_option. for a folder dataset .valid options: "):
        open_dataset(tmp_path / "ok", not_an_option=1)


# ----------------------------------------------------------------------------- real data


def test_real_ph2(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "PH2"))
    assert len(ds) == 200 and not ds.problems
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 140, "val": 20, "test": 40}
    case = ds.load(ds.splits["test"][0])
    assert case.image.shape[0] == 3 and case.label.shape == case.image.shape[1:]
    assert set(np.unique(case.label)) == {0, 1} and case.spacing is None


def test_real_cvc(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "CVC-ColonDB"))
    assert len(ds) == 380 and ds.ids[:3] == ["1", "2", "3"]
    assert len(set(ds.groups.values())) == 15 and ds.groups["380"] == "13"
    assert ds.load("77").group == ds.groups["77"]


def test_real_acdc(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "ACDC"))
    assert ds.num_classes == 4 and len(ds.splits["train"]) == 1312
    assert len(ds.splits["val"]) == 20 and len(ds.splits["test"]) == 40
    for cid in ds.splits["train"][:2]:
        s = ds.load(cid)
        assert s.image.ndim == 3 and s.image.shape[0] == 1 and s.label.shape == s.image.shape[1:]
        assert s.label.max() <= 3 and s.group == cid.split("_")[0]
    v = ds.load(ds.splits["test"][0])
    assert v.image.ndim == 4 and v.label.shape == v.image.shape[1:] and v.label.max() <= 3
    assert 6 <= v.image.shape[1] <= 17


def test_real_unlabeled_pool(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "derm-unlabeled"))
    assert len(ds) == 1500 and ds.splits["unlabeled"] == ds.ids
    case = ds[0]
    assert case.label is None and case.image.shape == (3, 224, 224)


def test_real_raw_samples_folders(shared_data: Path) -> None:
    ph2 = open_dataset(require(shared_data / "raw-samples" / "PH2"))
    assert ph2.ids == ["IMD002", "IMD003", "IMD004"] and not ph2.problems
    assert set(np.unique(ph2.load("IMD002").label)) == {0, 1}
    cvc = open_dataset(shared_data / "raw-samples" / "CVC-ColonDB")
    assert cvc.ids == ["1", "80"] and cvc.load("80").image.shape[0] == 3
