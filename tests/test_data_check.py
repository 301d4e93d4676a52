"""check_dataset: every problem reported at once, plus a usable summary."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from conftest import require
from qgseg.data import SegDataset, check_dataset, open_dataset, read_folder
from qgseg.data.datasets import CaseEntry, DataProblem


def save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def good_pair(root: Path, cid: str, size: tuple[int, int] = (10, 12)) -> None:
    save_png(root / "images" / f"{cid}.png", np.full((*size, 3), 100, np.uint8))
    m = np.zeros(size, np.uint8)
    m[: size[0] // 2] = 255
    save_png(root / "masks" / f"{cid}.png", m)


def test_check_reports_all_problems(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    good_pair(root, "ok1")
    good_pair(root, "ok2", (8, 8))
    # truncated image
    good_pair(root, "trunc", (32, 32))
    data = (root / "images" / "trunc.png").read_bytes()
    (root / "images" / "trunc.png").write_bytes(data[: len(data) // 2])
    # image/mask size mismatch
    save_png(root / "images" / "size.png", np.zeros((10, 12, 3), np.uint8))
    save_png(root / "masks" / "size.png", np.zeros((12, 10), np.uint8))
    # unexpected label values
    save_png(root / "images" / "vals.png", np.zeros((10, 12, 3), np.uint8))
    save_png(root / "masks" / "vals.png", np.arange(120, dtype=np.uint8).reshape(10, 12) % 4 * 60)
    # unpaired files on both sides
    save_png(root / "images" / "lonely.png", np.zeros((4, 4), np.uint8))
    save_png(root / "masks" / "orphan.png", np.zeros((4, 4), np.uint8))

    ds = read_folder(root)
    report = check_dataset(ds, progress=False)
    assert not report.ok
    text = "\n".join(str(p) for p in report.problems)
    for name, words in [
        ("trunc.png", "cannot read image"),
        ("size.png", "does not match"),
        ("vals.png", "unexpected label values"),
        ("lonely.png", "no matching mask"),
        ("orphan.png", "no matching image"),
    ]:
        assert any(name in str(p) and words in str(p) for p in report.problems), (name, text)
    assert len(report.problems) == 5
    assert report.summary["case_count"] == 5 and report.summary["checked_count"] == 2
    formatted = report.format()
    assert "5 problem(s)" in formatted and "trunc.png" in formatted and "orphan.png" in formatted


def test_check_nan_nifti_and_empty(tmp_path: Path) -> None:
    vol = np.zeros((4, 4, 3), np.float32)
    vol[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "nan.nii.gz")
    ds = SegDataset("n", tmp_path, [CaseEntry("nan", [tmp_path / "nan.nii.gz"], None)], spatial_dims=3)
    report = check_dataset(ds)
    assert [p.path for p in report.problems] == [str(tmp_path / "nan.nii.gz")]
    assert "NaN" in report.problems[0].message

    empty = SegDataset("e", tmp_path / "nothing", [])
    report = check_dataset(empty)
    assert not report.ok and "empty" in report.format()


def test_check_summary_ok(tmp_path: Path) -> None:
    root = tmp_path / "fine"
    good_pair(root, "a")
    good_pair(root, "b", (8, 8))
    report = check_dataset(read_folder(root), progress=True)
    assert report.ok and report.problems == []
    s = report.summary
    assert s["case_count"] == 2 and s["labeled_count"] == 2 and s["channels"] == {3}
    assert s["spatial_sizes"][2] == {"min": (8, 8), "max": (10, 12), "distinct": 2}
    assert s["spacing"] == "none (pixels)"
    assert abs(s["foreground_fraction"]["foreground"] - 0.5) < 1e-9
    text = report.format()
    assert "OK" in text and "none (pixels)" in text
    assert str(DataProblem("a/b.png", "broken")) == "a/b.png: broken"


def test_check_spacing_range(tmp_path: Path) -> None:
    entries = []
    for i, z in enumerate((2.0, 5.0)):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.diag([1.0, 1.0, z, 1.0])), tmp_path / f"{i}.nii.gz")
        entries.append(CaseEntry(str(i), [tmp_path / f"{i}.nii.gz"], None))
    s = check_dataset(SegDataset("s", tmp_path, entries, spatial_dims=3)).summary
    assert s["spacing"] == {"min": (1.0, 1.0, 2.0), "max": (1.0, 1.0, 5.0)}


def test_check_real_ph2_sample(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "PH2"))
    report = check_dataset(ds, max_cases=5)
    assert report.ok and report.summary["checked_count"] == 5 and report.summary["case_count"] == 200
