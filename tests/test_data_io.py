"""File-level I/O: image/mask readers for every format, mask conventions, writing, pairing."""
from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from qgseg.data.io import DataError, file_ext, read_case_files, read_image, read_mask, strip_ext, write_mask
from qgseg.data.pairing import pair_files
from conftest import require

RNG = np.random.default_rng(0)


def rgb(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def binary(h: int = 12, w: int = 16) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2:6, 3:9] = 1
    return m


# ----------------------------------------------------------------------------- names


def test_file_ext_and_strip_ext() -> None:
    assert file_ext("a/b/x.nii.gz") == ".nii.gz"
    assert file_ext("X.PNG") == ".png"
    assert strip_ext("dir/case_0000.nii.gz") == "case_0000"
    assert strip_ext("IMD002_lesion.bmp") == "IMD002_lesion"


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_read_rgb_lossless(tmp_path: Path, ext: str) -> None:
    arr = rgb()
    p = tmp_path / f"x{ext}"
    if ext in (".tif", ".tiff"):
        tifffile.imwrite(p, arr, photometric="rgb")
    else:
        Image.fromarray(arr).save(p)
    img, info = read_image(p)
    assert img.dtype == np.float32 and img.shape == (3, 12, 16)
    np.testing.assert_array_equal(img, np.moveaxis(arr, -1, 0).astype(np.float32))
    assert info["spacing"] is None and info["affine"] is None and info["dtype"] == "uint8"


def test_read_jpeg_grey_rgba_palette_and_1bit(tmp_path: Path) -> None:
    Image.fromarray(rgb()).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg")[0].shape == (3, 12, 16)
    grey = RNG.integers(0, 256, (8, 10), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    img, _ = read_image(tmp_path / "g.png")
    assert img.shape == (1, 8, 10) and img.max() == grey.max()  # no rescaling
    rgba = np.dstack([rgb(8, 10), np.full((8, 10), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img, _ = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(img, np.moveaxis(rgba[..., :3], -1, 0))
    Image.fromarray(rgb(8, 10)).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png")[0].shape == (3, 8, 10)
    Image.fromarray(binary(8, 10).astype(bool)).save(tmp_path / "bits.png")
    img, info = read_image(tmp_path / "bits.png")
    assert img.shape == (1, 8, 10) and set(np.unique(img)) == {0.0, 1.0} and info["dtype"] == "bool"


def test_read_16bit_png_keeps_values(tmp_path: Path) -> None:
    arr = np.arange(80, dtype=np.uint16).reshape(8, 10) * 700
    Image.fromarray(arr).save(tmp_path / "d.png")
    img, _ = read_image(tmp_path / "d.png")
    assert img.max() == arr.max()


def test_read_nifti_2d_3d_4d(tmp_path: Path) -> None:
    aff = np.diag([0.5, 0.7, 3.0, 1.0])
    vol = RNG.normal(size=(8, 9, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, aff), tmp_path / "v.nii.gz")
    img, info = read_image(tmp_path / "v.nii.gz")
    assert img.shape == (1, 8, 9, 5) and info["spacing"] == (0.5, 0.7, 3.0)
    np.testing.assert_allclose(info["affine"], aff)
    np.testing.assert_allclose(img[0], vol)

    nib.save(nib.Nifti1Image(vol[:, :, :1], aff), tmp_path / "s.nii")
    img, info = read_image(tmp_path / "s.nii")
    assert img.shape == (1, 8, 9) and info["spacing"] == (0.5, 0.7)

    four = RNG.normal(size=(8, 9, 5, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(four, aff), tmp_path / "c.nii.gz")
    img, info = read_image(tmp_path / "c.nii.gz")
    assert img.shape == (2, 8, 9, 5) and info["spacing"] == (0.5, 0.7, 3.0)
    np.testing.assert_allclose(img[1], four[..., 1])


def test_read_h5_and_npy(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["image"] = RNG.random((10, 12)).astype(np.float32)
        f["label"] = np.eye(10, 12, dtype=np.uint8) * 3
    assert read_image(tmp_path / "s.h5")[0].shape == (1, 10, 12)
    assert read_mask(tmp_path / "s.h5", num_classes=4).max() == 3
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["image"] = RNG.random((4, 10, 12)).astype(np.float32)
    assert read_image(tmp_path / "v.h5")[0].shape == (1, 4, 10, 12)
    with pytest.raises(DataError, match=r"v\.h5.*no 'label'"):
        read_mask(tmp_path / "v.h5")
    np.save(tmp_path / "a.npy", RNG.random((6, 7)))
    assert read_image(tmp_path / "a.npy")[0].shape == (1, 6, 7)


# ----------------------------------------------------------------------------- masks


def test_mask_conventions(tmp_path: Path) -> None:
    m = binary()
    Image.fromarray(m * 255).save(tmp_path / "m255.png")
    Image.fromarray(m).save(tmp_path / "m01.png")
    Image.fromarray(m.astype(bool)).save(tmp_path / "m1bit.bmp")
    Image.fromarray(np.dstack([m * 255] * 3)).save(tmp_path / "mrgb.bmp")
    Image.fromarray(np.zeros_like(m)).save(tmp_path / "empty.png")
    for name in ("m255.png", "m01.png", "m1bit.bmp", "mrgb.bmp"):
        out = read_mask(tmp_path / name)
        assert out.dtype == np.int64 and out.shape == m.shape, name
        np.testing.assert_array_equal(out, m, err_msg=name)
    assert read_mask(tmp_path / "empty.png", num_classes=2).sum() == 0

    classes = np.zeros((12, 16), np.uint8)
    classes[:4], classes[4:8] = 1, 3
    Image.fromarray(classes).save(tmp_path / "idx.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "idx.png", num_classes=4), classes)
    with pytest.raises(DataError, match=r"idx\.png: unexpected label values \[3\]"):
        read_mask(tmp_path / "idx.png", num_classes=3)


def test_mask_unexpected_values_and_colour(tmp_path: Path) -> None:
    m = binary()
    m[0, 0] = 3
    Image.fromarray(m * 255 // 3).save(tmp_path / "IMD003.png")  # values {0, 85, 255}
    with pytest.raises(DataError) as err:
        read_mask(tmp_path / "IMD003.png", num_classes=2)
    assert "IMD003.png" in str(err.value) and "85" in str(err.value) and "{0,255}" in str(err.value)
    col = np.zeros((8, 8, 3), np.uint8)
    col[2:4, 2:4] = (255, 0, 0)
    Image.fromarray(col).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png: colour mask with unequal"):
        read_mask(tmp_path / "colour.png")


def test_mask_nifti_and_tiff(tmp_path: Path) -> None:
    lab = np.zeros((6, 7, 3), np.uint8)
    lab[1:3, 2:5, 1] = 2
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "l.nii.gz")
    np.testing.assert_array_equal(read_mask(tmp_path / "l.nii.gz", 3), lab)
    nib.save(nib.Nifti1Image(lab[:, :, 1:2], np.eye(4)), tmp_path / "l2.nii.gz")
    assert read_mask(tmp_path / "l2.nii.gz").shape == (6, 7)
    tifffile.imwrite(tmp_path / "pm.tiff", binary() * 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "pm.tiff"), binary())


# ----------------------------------------------------------------------------- broken inputs


def test_truncated_png_and_missing_file(tmp_path: Path) -> None:
    Image.fromarray(rgb(32, 32)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"half\.png: cannot read image"):
        read_image(tmp_path / "half.png")
    with pytest.raises(DataError, match=r"nope\.png: file does not exist"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"junk\.tif"):
        read_image(tmp_path / "junk.tif")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"junk\.nii\.gz"):
        read_image(tmp_path / "junk.nii.gz")


def test_nan_in_nifti(tmp_path: Path) -> None:
    vol = np.zeros((5, 5, 4), np.float32)
    vol[1, 2, 3] = np.nan
    vol[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"nan\.nii\.gz: image contains 1 NaN and 1 Inf"):
        read_image(tmp_path / "nan.nii.gz")


def test_read_case_files_channels_and_shape_mismatch(tmp_path: Path) -> None:
    for c in range(2):
        nib.save(nib.Nifti1Image(np.full((6, 7, 4), c, np.float32), np.diag([1, 1, 2, 1])),
                 tmp_path / f"k_{c:04d}.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 7, 4), np.uint8), np.eye(4)), tmp_path / "k.nii.gz")
    case = read_case_files([tmp_path / "k_0000.nii.gz", tmp_path / "k_0001.nii.gz"], tmp_path / "k.nii.gz", "k", 2)
    assert case.image.shape == (2, 6, 7, 4) and case.label.shape == (6, 7, 4)
    assert case.spacing == (1.0, 1.0, 2.0) and case.affine is not None and case.spatial_dims == 3
    assert case.image[1].min() == 1

    Image.fromarray(rgb(12, 16)).save(tmp_path / "a.png")
    Image.fromarray(binary(10, 16) * 255).save(tmp_path / "a_mask.png")
    with pytest.raises(DataError) as err:
        read_case_files(tmp_path / "a.png", tmp_path / "a_mask.png", "a")
    msg = str(err.value)
    assert "a_mask.png" in msg and "a.png" in msg and "(10, 16)" in msg and "(12, 16)" in msg


def test_write_mask_roundtrip(tmp_path: Path) -> None:
    m = binary()
    p = write_mask(tmp_path / "out" / "deep" / "m.png", m)
    assert set(np.unique(np.asarray(Image.open(p)))) == {0, 255}
    np.testing.assert_array_equal(read_mask(p), m)
    write_mask(tmp_path / "idx.png", m, binary_as_255=False)
    assert np.asarray(Image.open(tmp_path / "idx.png")).max() == 1
    vol = np.zeros((4, 5, 3), np.int64)
    vol[1, 1, 1] = 2
    aff = np.diag([2.0, 2.0, 5.0, 1.0])
    write_mask(tmp_path / "v.nii.gz", vol, affine=aff)
    img = nib.load(tmp_path / "v.nii.gz")
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, aff)
    np.testing.assert_array_equal(read_mask(tmp_path / "v.nii.gz", 3), vol)
    write_mask(tmp_path / "t.tif", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "t.tif"), m)
    write_mask(tmp_path / "n.npy", vol)
    np.testing.assert_array_equal(np.load(tmp_path / "n.npy"), vol)
    with pytest.raises(DataError, match="JPEG"):
        write_mask(tmp_path / "x.jpg", m)


# ----------------------------------------------------------------------------- pairing


def test_pairing_patterns() -> None:
    images = [Path(f"i/{n}") for n in ("1.tiff", "80.tif", "IMD002.bmp", "ISIC_1.jpg", "k.nii.gz", "q.png", "z.png")]
    masks = [Path(f"m/{n}") for n in ("p1.tiff", "p80.tiff", "IMD002_lesion.bmp", "ISIC_1_Segmentation.png",
                                      "k.nii.gz", "q-mask.png", "orphan.png")]
    r = pair_files(images, masks)
    got = {cid: m.name for cid, _, m in r.pairs}
    assert got == {"1": "p1.tiff", "80": "p80.tiff", "IMD002": "IMD002_lesion.bmp",
                   "ISIC_1": "ISIC_1_Segmentation.png", "k": "k.nii.gz", "q": "q-mask.png"}
    assert r.unpaired_images == [Path("i/z.png")] and r.unpaired_masks == [Path("m/orphan.png")]


def test_pairing_custom_pattern_and_ambiguity() -> None:
    r = pair_files([Path("a.png"), Path("b.png")], [Path("mask_a.png"), Path("b_seg.png")], mask_pattern="mask_{stem}")
    assert [(c, m.name) for c, _, m in r.pairs] == [("a", "mask_a.png")]
    assert r.unpaired_images == [Path("b.png")] and r.unpaired_masks == [Path("b_seg.png")]
    r = pair_files([Path("i/a.png")], [Path("m/a.png"), Path("m/a_mask.png")])
    assert not r.pairs and r.ambiguous and "ambiguous" in r.problems()[0][1]
    assert not r.unpaired_masks  # candidates of an ambiguous image are not "orphans"


# ----------------------------------------------------------------------------- real raw samples


def test_raw_ph2_bmp(shared_data: Path) -> None:
    root = require(shared_data / "raw-samples" / "PH2")
    m2 = read_mask(root / "masks" / "IMD002_lesion.bmp", num_classes=2)  # 24-bit RGB {0,255}
    m3 = read_mask(root / "masks" / "IMD003_lesion.bmp", num_classes=2)  # 1-bit
    assert set(np.unique(m2)) == {0, 1} and set(np.unique(m3)) == {0, 1}
    case = read_case_files(root / "images" / "IMD002.bmp", root / "masks" / "IMD002_lesion.bmp", "IMD002", 2)
    assert case.image.shape == (3, 572, 765) and case.label.shape == (572, 765)


def test_raw_cvc_tiff(shared_data: Path) -> None:
    root = require(shared_data / "raw-samples" / "CVC-ColonDB")
    r = pair_files(sorted((root / "images").iterdir()), sorted((root / "masks").iterdir()))
    assert sorted(c for c, _, _ in r.pairs) == ["1", "80"] and not r.unpaired_images
    for cid, img, msk in r.pairs:
        case = read_case_files(img, msk, cid, 2)
        assert case.image.shape[0] == 3 and case.label.shape == case.image.shape[1:]
        assert set(np.unique(case.label)) <= {0, 1}
