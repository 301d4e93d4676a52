"""Procedural demo data: determinism, shapes, on-disk layouts, and that it is not trivial."""
from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image

from qgseg.data.demo import make_demo_case, make_demo_dataset


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> tuple[Path, float]:
    """The default 2D dataset, as ``qgseg demo`` makes it, and how long it took."""
    out = tmp_path_factory.mktemp("demo2d")
    start = time.perf_counter()
    make_demo_dataset(out)
    return out, time.perf_counter() - start


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- cases
def test_case_shapes_dtypes_and_values() -> None:
    image, label = make_demo_case(_rng(0))
    assert image.shape == (1, 96, 96) and image.dtype == np.float32
    assert label.shape == (96, 96) and label.dtype == np.int64
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert set(np.unique(label)) == {0, 1}

    rgb, _ = make_demo_case(_rng(0), size=(64, 80), channels=3)
    assert rgb.shape == (3, 64, 80)
    # Colour tints make the channels differ.
    assert not np.allclose(rgb[0], rgb[1])


def test_case_is_deterministic() -> None:
    a_img, a_lab = make_demo_case(_rng(3))
    b_img, b_lab = make_demo_case(_rng(3))
    c_img, _ = make_demo_case(_rng(4))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_foreground_fraction_is_reasonable() -> None:
    fractions = [(make_demo_case(_rng(s))[1] > 0).mean() for s in range(16)]
    assert all(0.05 <= f <= 0.40 for f in fractions), fractions


def test_multiclass_core_lies_inside_lesion() -> None:
    with_core = 0
    for s in range(6):
        _, label = make_demo_case(_rng(s), num_classes=3)
        assert set(np.unique(label)) <= {0, 1, 2}
        core = label == 2
        with_core += bool(core.any())
        # The core is smaller than the lesion that holds it.
        assert core.sum() < (label == 1).sum()
    assert with_core >= 5


def test_3d_case() -> None:
    image, label = make_demo_case(_rng(1), size=(48, 48), spatial_dims=3, depth=12)
    assert image.shape == (1, 12, 48, 48) and label.shape == (12, 48, 48)
    assert 0.03 <= (label > 0).mean() <= 0.40
    per_slice = (label > 0).sum(axis=(1, 2))
    # A blob spanning several slices whose area changes smoothly, not a 2D stamp repeated.
    assert (per_slice > 0).sum() >= 4
    assert len(set(per_slice.tolist())) > 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_demo_case(_rng(0), num_classes=4)
    with pytest.raises(ValueError):
        make_demo_case(_rng(0), channels=2)


# ----------------------------------------------------------------------------- a threshold cannot solve it
def _oracle_threshold_dice(gray_u8: np.ndarray, fg: np.ndarray) -> float:
    """Best Dice of any global threshold and polarity on this image, chosen with hindsight."""
    g = gray_u8.ravel().astype(np.int64)
    f = fg.ravel()
    total = np.bincount(g, minlength=256)
    pos = np.bincount(g[f], minlength=256)
    n_fg = f.sum()
    dark_tp, dark_pred = np.cumsum(pos), np.cumsum(total)  # predict g <= t
    bright_tp, bright_pred = np.cumsum(pos[::-1]), np.cumsum(total[::-1])  # predict g >= t
    dice = np.concatenate([2 * dark_tp / (dark_pred + n_fg), 2 * bright_tp / (bright_pred + n_fg)])
    return float(dice.max())


def test_best_global_threshold_fails(default_dataset) -> None:
    root, _ = default_dataset
    ids = (root / "splits" / "test.txt").read_text().split()
    assert len(ids) == 16
    scores = []
    for case_id in ids:
        gray = np.asarray(Image.open(root / "images" / f"{case_id}.png"))
        fg = np.asarray(Image.open(root / "masks" / f"{case_id}.png")) > 0
        scores.append(_oracle_threshold_dice(gray, fg))
    # Measured about 0.45; a small U-Net reaches about 0.88 on the same data.
    assert np.mean(scores) < 0.6, scores


# ----------------------------------------------------------------------------- datasets on disk
def test_default_2d_dataset_layout(default_dataset) -> None:
    root, seconds = default_dataset
    assert seconds < 15, f"default demo dataset took {seconds:.1f} s (target < 5 s)"
    splits = {s: (root / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 8, 16]
    assert splits["train"][0] == "demo_0000"
    labeled = splits["train"] + splits["val"] + splits["test"]
    assert len(set(labeled)) == 40
    unlabeled = sorted(p.stem for p in (root / "unlabeled" / "images").glob("*.png"))
    assert len(unlabeled) == 64 and not set(unlabeled) & set(labeled)
    assert sorted(p.stem for p in (root / "images").glob("*.png")) == sorted(labeled)
    assert sorted(p.stem for p in (root / "masks").glob("*.png")) == sorted(labeled)

    img = Image.open(root / "images" / "demo_0000.png")
    mask = np.asarray(Image.open(root / "masks" / "demo_0000.png"))
    assert img.mode == "L" and img.size == (96, 96)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    assert meta == {"format": "folder", "classes": ["background", "lesion"]}
    assert json.loads((root / "demo_params.json").read_text())["seed"] == 0


def test_dataset_deterministic_and_idempotent(tmp_path) -> None:
    kw = dict(n_labeled=3, n_unlabeled=2, n_val=1, n_test=1, size=(48, 48))
    a = make_demo_dataset(tmp_path / "a", seed=5, **kw)
    b = make_demo_dataset(tmp_path / "b", seed=5, **kw)
    c = make_demo_dataset(tmp_path / "c", seed=6, **kw)
    files_a = _files(a)
    assert files_a == _files(b)  # byte-identical
    assert files_a != _files(c)

    # Same parameters again: nothing is rewritten.
    stamp = (a / "images" / "demo_0000.png").stat().st_mtime_ns
    time.sleep(0.01)
    make_demo_dataset(a, seed=5, **kw)
    assert (a / "images" / "demo_0000.png").stat().st_mtime_ns == stamp

    # An incomplete dataset is regenerated.
    (a / "masks" / "demo_0001.png").unlink()
    make_demo_dataset(a, seed=5, **kw)
    assert _files(a) == files_a

    # Other parameters replace the old files instead of mixing with them.
    make_demo_dataset(a, seed=5, **{**kw, "n_labeled": 2})
    assert not (a / "images" / "demo_0004.png").exists()  # old train+val+test had 5 ids
    assert len(list((a / "images").glob("*.png"))) == 4


def test_multiclass_rgb_2d_dataset(tmp_path) -> None:
    root = make_demo_dataset(tmp_path, n_labeled=3, n_unlabeled=1, n_val=1, n_test=1,
                             size=(64, 64), num_classes=3, channels=3)
    img = Image.open(root / "images" / "demo_0000.png")
    assert img.mode == "RGB" and img.size == (64, 64)
    values = set()
    for p in (root / "masks").glob("*.png"):
        values |= set(np.unique(np.asarray(Image.open(p))).tolist())
    assert values == {0, 1, 2}  # class indices, not scaled to 255
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    assert meta["classes"] == ["background", "lesion", "core"]
    assert Image.open(root / "unlabeled" / "images" / "demo_0005.png").mode == "RGB"


def test_3d_dataset_nnunet_layout(tmp_path) -> None:
    kw = dict(n_labeled=2, n_unlabeled=1, n_val=1, n_test=1, size=(40, 48),
              spatial_dims=3, depth=10, num_classes=3)
    root = make_demo_dataset(tmp_path / "a", seed=1, **kw)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "lesion": 1, "core": 2}
    assert meta["channel_names"] == {"0": "demo"}
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        f"demo_{i:04d}_0000.nii.gz" for i in range(4)
    ]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [
        f"demo_{i:04d}.nii.gz" for i in range(4)
    ]
    assert [p.name for p in (root / "imagesTs").iterdir()] == ["demo_0004_0000.nii.gz"]
    assert (root / "splits" / "val.txt").read_text().split() == ["demo_0002"]

    img = nib.load(root / "imagesTr" / "demo_0000_0000.nii.gz")
    lab = nib.load(root / "labelsTr" / "demo_0000.nii.gz")
    # (X, Y, Z) = (W, H, D), slices along Z with 2.5 mm spacing.
    assert img.shape == (48, 40, 10) and lab.shape == (48, 40, 10)
    assert img.header.get_zooms() == pytest.approx((1.0, 1.0, 2.5))
    assert lab.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2}

    # The stored volume is the generated one, transposed to (X, Y, Z).
    seeds = np.random.SeedSequence(1).spawn(5)
    image, label = make_demo_case(np.random.default_rng(seeds[0]), size=(40, 48),
                                  spatial_dims=3, depth=10, num_classes=3)
    assert np.array_equal(np.asarray(lab.dataobj).transpose(2, 1, 0), label)
    assert np.allclose(img.get_fdata().transpose(2, 1, 0), image[0])

    assert _files(root) == _files(make_demo_dataset(tmp_path / "b", seed=1, **kw))
