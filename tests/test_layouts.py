"""Layouts real datasets come in (issue 12, section 2) and the CSV short-row case, on tiny generated copies."""
from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from helpers import tiny_config
from PIL import Image

from qgseg.cli.main import main
from qgseg.config import load_config
from qgseg.data.case import Case
from qgseg.data.check import check_dataset, harmonise_channels
from qgseg.data.detect import detect_format, open_dataset
from qgseg.data.io import DataError, read_mask

SIZE = 16


def _disc(seed: int, value: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = 3 + seed % 3
    return (((yy - 8) ** 2 + (xx - 8) ** 2) <= r * r).astype(np.uint8) * value


def _photo(seed: int, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIZE, SIZE) if grey else (SIZE, SIZE, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)
    return path


def _jpeg_mask(path: Path, seed: int) -> Path:
    """A 0/255 mask saved as JPEG: compression leaves values near 0 and near 255 with ringing between."""
    return _save(path, _disc(seed), quality=60)


# ----------------------------------------------------------------------------- one folder, suffixes


def test_one_folder_pairs_by_suffix(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / f"c{i}.png", _photo(i))
        _save(tmp_path / f"c{i}_mask.png", _disc(i))
    _save(tmp_path / "p_orig.png", _photo(7))
    _save(tmp_path / "p_contour.png", _disc(7))
    assert detect_format(tmp_path) == "paired"
    ds = open_dataset(tmp_path)
    assert sorted(ds.labeled_ids) == ["c0", "c1", "c2", "p"] and not ds.unlabeled_ids and not ds.problems
    case = ds.load("p")
    assert case.image.shape == (3, SIZE, SIZE) and set(np.unique(case.label)) == {0, 1}


def test_one_folder_explicit_patterns(tmp_path: Path) -> None:
    for i in range(2):
        _save(tmp_path / f"img{i}_x.png", _photo(i))
        _save(tmp_path / f"img{i}_y.png", _disc(i))
    yaml = tmp_path / "ds.yaml"
    yaml.write_text("format: paired\nroot: .\nmask_pattern: '{stem}_y'\nimage_pattern: '{stem}_x'\n")
    ds = open_dataset(yaml)
    assert sorted(ds.labeled_ids) == ["img0", "img1"] and not ds.problems


def test_unlabeled_folder_never_hides_mask_named_files(tmp_path: Path) -> None:
    for i in range(8):
        _save(tmp_path / f"u{i}.png", _photo(i))
    _save(tmp_path / "u0_mask.png", _disc(0))
    assert detect_format(tmp_path) == "unlabeled"
    ds = open_dataset(tmp_path)
    assert "u0_mask" not in ds.ids and len(ds) == 8
    assert [Path(p.path).name for p in ds.problems] == ["u0_mask.png"]
    assert "named like a mask" in ds.problems[0].message


# ----------------------------------------------------------------------------- several masks


def test_several_masks_merged_with_a_note(tmp_path: Path, capsys) -> None:
    left, right = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    left[:, :4], right[:, -4:] = 255, 255
    _save(tmp_path / "images" / "a.png", _photo(0))
    _save(tmp_path / "masks" / "a_mask.png", left)
    _save(tmp_path / "masks" / "a_mask_1.png", right)
    _save(tmp_path / "images" / "b.png", _photo(1))
    _save(tmp_path / "masks" / "b_mask_1.png", left)
    _save(tmp_path / "masks" / "b_mask_2.png", right)
    ds = open_dataset(tmp_path)
    assert not ds.problems and sorted(ds.labeled_ids) == ["a", "b"]
    assert len(ds.notes) == 2 and "2 masks merged" in ds.notes[0]
    for cid in ("a", "b"):
        label = ds.load(cid).label
        assert label[:, :4].all() and label[:, -4:].all() and label.sum() == 8 * SIZE
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "note: a.png: 2 masks merged" in capsys.readouterr().out


def test_several_masks_disagreeing_classes_refused(tmp_path: Path) -> None:
    one, two = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    one[:8], two[4:12] = 1, 2
    _save(tmp_path / "images" / "a.png", _photo(0))
    _save(tmp_path / "masks" / "a_mask.png", one)
    _save(tmp_path / "masks" / "a_mask_2.png", two)
    ds = open_dataset(tmp_path, classes=3)
    with pytest.raises(DataError, match="another non-background class.*a_mask.png"):
        ds.load("a")


# ----------------------------------------------------------------------------- sub-folders, nesting


def test_masks_in_single_subfolder(tmp_path: Path) -> None:
    for i in range(2):
        _save(tmp_path / "images" / f"{i}.png", _photo(i))
        _save(tmp_path / "masks" / "0" / f"{i}.png", _disc(i))
    ds = open_dataset(tmp_path)
    assert sorted(ds.labeled_ids) == ["0", "1"] and not ds.problems
    assert "masks/0/" in ds.notes[0]


def test_masks_in_several_subfolders_refused(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "1.png", _photo(1))
    for annotator in ("a", "b"):
        _save(tmp_path / "masks" / annotator / "1.png", _disc(1))
    with pytest.raises(DataError, match=r"only sub-folders \(a, b\).*masks_dir: masks/a"):
        open_dataset(tmp_path)


def test_nested_per_source_folders_keep_repeating_names_apart(tmp_path: Path) -> None:
    for k, site in enumerate(("siteA", "siteB")):
        for i in range(2):
            _save(tmp_path / "images" / site / f"{i}.png", _photo(10 * k + i))
            _save(tmp_path / "masks" / site / f"{i}.png", _disc(10 * k + i))
    ds = open_dataset(tmp_path)
    assert sorted(ds.labeled_ids) == ["siteA/0", "siteA/1", "siteB/0", "siteB/1"] and not ds.problems
    assert all(g is None for g in ds.groups.values())
    assert ds.load("siteB/1").meta["image_paths"][0].endswith("siteB/1.png")


# ----------------------------------------------------------------------------- JPEG masks


def test_jpeg_mask_threshold_yaml_and_set(tmp_path: Path) -> None:
    for i in range(2):
        _save(tmp_path / "data" / "images" / f"{i}.png", _photo(i))
        _jpeg_mask(tmp_path / "data" / "masks" / f"{i}.jpg", i)
    assert len(np.unique(np.asarray(Image.open(tmp_path / "data" / "masks" / "0.jpg")))) > 2  # really lossy
    with pytest.raises(DataError, match="lossy-compressed.*mask_threshold: 128"):
        open_dataset(tmp_path / "data").load("0")
    yaml = tmp_path / "ds.yaml"
    yaml.write_text("format: folder\nroot: data\nmask_threshold: 128\n")
    label = open_dataset(yaml).load("0").label
    np.testing.assert_array_equal(label, _disc(0) // 255)
    cfg = load_config(None, [f"data.dataset={tmp_path / 'data'}", "data.mask_threshold=128"])
    assert cfg.data.mask_threshold == 128
    ds = open_dataset(cfg.data.dataset, mask_threshold=cfg.data.mask_threshold)
    np.testing.assert_array_equal(ds.load("1").label, _disc(1) // 255)
    assert set(np.unique(read_mask(tmp_path / "data" / "masks" / "1.jpg", 2, threshold=128))) == {0, 1}


# ----------------------------------------------------------------------------- swapped folders


def test_swapped_folders_one_line(tmp_path: Path, capsys) -> None:
    for i in range(5):
        _save(tmp_path / "images" / f"{i}.png", _disc(i))
        _save(tmp_path / "masks" / f"{i}.png", _photo(i))
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "look swapped" in err[0]


# ----------------------------------------------------------------------------- HDF5 volumes


def _h5(path: Path, seed: int, label: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["image"] = rng.random((8, SIZE, SIZE), dtype=np.float32)
        if label:
            f["label"] = (rng.random((8, SIZE, SIZE)) > 0.7).astype(np.uint8)
    return path


@pytest.mark.parametrize("nested", [False, True])
def test_h5_volumes_la_layout(tmp_path: Path, nested: bool) -> None:
    lists = tmp_path / "data" if nested else tmp_path
    vols = lists / "2018LA_Seg_Training Set" if nested else lists
    for i, cid in enumerate(["A1", "B2", "C3"]):
        _h5(vols / cid / "mri_norm2.h5", i)
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.list").write_text("A1\nB2\n")
    (lists / "test.list").write_text("C3\nMISSING\n")
    assert detect_format(tmp_path) == "h5volumes"
    ds = open_dataset(tmp_path)
    assert ds.spatial_dims == 3 and ds.splits == {"test": ["C3"], "train": ["A1", "B2"]}
    assert ds.classes == ["background", "foreground"]
    assert [("MISSING" in p.path, "test.list" in p.message) for p in ds.problems] == [(True, True)]
    case = ds.load("A1")
    assert case.image.shape == (1, 8, SIZE, SIZE) and case.label.shape == (8, SIZE, SIZE)


def test_h5_in_csv(tmp_path: Path) -> None:
    _h5(tmp_path / "a.h5", 0)
    _h5(tmp_path / "b.h5", 1)
    (tmp_path / "list.csv").write_text("image_path,mask_path\na.h5,a.h5\nb.h5,\n")
    ds = open_dataset(tmp_path / "list.csv")
    assert ds.labeled_ids == ["a"] and ds.unlabeled_ids == ["b"]
    assert ds.load("a").label.shape == (8, SIZE, SIZE)
    assert "b.h5" in ds.notes[0] and "label" in ds.notes[0]


# ----------------------------------------------------------------------------- mixed channels


def _rgb_folder_with_one_grey(root: Path, n: int = 6) -> None:
    for i in range(n):
        _save(root / "images" / f"{i}.jpg", _photo(i, grey=(i == 2)))
        _save(root / "masks" / f"{i}.png", _disc(i))


def test_mixed_channels_reported_by_check(tmp_path: Path, capsys) -> None:
    _rgb_folder_with_one_grey(tmp_path)
    report = check_dataset(open_dataset(tmp_path))
    assert [Path(p.path).name for p in report.problems] == ["2.jpg"]
    assert "1 channel(s) while 5 other case(s) have 3" in report.problems[0].message
    vol = np.zeros((SIZE, SIZE, 4), np.float32)
    (tmp_path / "nii").mkdir()
    for i in range(3):
        nib.save(nib.Nifti1Image(np.stack([vol, vol], -1) if i == 1 else vol, np.eye(4)),
                 str(tmp_path / "nii" / f"v{i}.nii.gz"))
    report = check_dataset(open_dataset(tmp_path / "nii"))
    assert [Path(p.path).name for p in report.problems] == ["v1.nii.gz"]


def test_unlabeled_pool_repeats_grey_to_rgb(tmp_path: Path, capsys) -> None:
    import torch

    from qgseg.data.pool import ImagePool

    _rgb_folder_with_one_grey(tmp_path, n=3)
    ds = open_dataset(tmp_path)
    pool = ImagePool([(ds, i) for i in ds.ids], [SIZE, SIZE], "auto", True, 2, channels=3)
    x, *_ = pool.batch(torch.arange(3), torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, SIZE, SIZE) and "2.jpg" in capsys.readouterr().out


def test_harmonise_channels_refuses_other_mismatch() -> None:
    cases = [Case(f"c{i}", np.zeros((1, 4, 4), np.float32), meta={"image_paths": [f"c{i}.png"]}) for i in range(3)]
    cases.append(Case("odd", np.zeros((4, 4, 4), np.float32), meta={"image_paths": ["odd.tif"]}))
    with pytest.raises(DataError, match="odd.tif: image has 4 channel"):
        harmonise_channels(cases)


def test_training_converts_grey_to_rgb(tmp_path: Path, capsys) -> None:
    from qgseg.engine.segmentation import SegmentationTrainer

    _rgb_folder_with_one_grey(tmp_path / "data", n=8)
    cfg = tiny_config(tmp_path / "data", tmp_path / "runs", data__image_size="[16,16]", train__iterations=1,
                      train__val_every=1, train__batch_size=8, eval__overlays=0)
    SegmentationTrainer(cfg, tmp_path / "runs" / "r").fit()
    out = capsys.readouterr().out
    assert "1 grey image(s) among 3-channel ones repeated to 3 channels" in out and "2.jpg" in out


# ----------------------------------------------------------------------------- CSV, options


def test_csv_short_row_is_a_problem(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / f"{i}.png", _photo(i))
        _save(tmp_path / f"{i}_m.png", _disc(i))
    lines = ["image_path,mask_path,split", "0.png,0_m.png,train", "1.png,1_m.png,val", "2.png", "1.png,1_m.png,x,y"]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    ds = open_dataset(tmp_path / "l.csv")
    assert ds.ids == ["0", "1"] and not ds.unlabeled_ids
    assert [p.message.split(",")[0] for p in ds.problems] == ["line 4 has 1 field(s)", "line 5 has 4 field(s)"]
    assert ds.problems[0].path.endswith("l.csv line 4")


def test_unknown_option_lists_valid_ones(tmp_path: Path) -> None:
    for i in range(2):
        _save(tmp_path / "images" / f"{i}.png", _photo(i))
        _save(tmp_path / "masks" / f"{i}.png", _disc(i))
    with pytest.raises(DataError, match=r"unknown option 'mask_patern'.*did you mean 'mask_pattern'\?.*images_dir"):
        open_dataset(tmp_path, mask_patern="{stem}")
    (tmp_path / "ds.yaml").write_text("format: folder\nroot: .\nmask_treshold: 128\n")
    with pytest.raises(DataError, match=r"did you mean 'mask_threshold'\?.*\(valid options: .*format"):
        open_dataset(tmp_path / "ds.yaml")
    (tmp_path / "ds.yaml").write_text("format: folder\nroot: .\nmask_threshold: 300\n")
    with pytest.raises(DataError, match="1..255"):
        open_dataset(tmp_path / "ds.yaml")

