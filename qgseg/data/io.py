"""Reading and writing single image / mask files in every format qgseg accepts.

All readers return channels-first float32 images and int64 class-index masks, and turn every
failure into a :class:`DataError` that names the offending file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qgseg.data.case import Case

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".h5", ".hdf5", ".npy",
)
RASTER_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii", ".nii.gz")
HDF5_EXTENSIONS: tuple[str, ...] = (".h5", ".hdf5")


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent.

    ``DataError(message, path)`` formats as ``"path: message"``; ``path`` and ``problem`` stay
    available as attributes so reports can list them separately.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path: str | None = str(path) if path is not None else None
        self.problem: str = message
        super().__init__(f"{path}: {message}" if path is not None else message)


# ----------------------------------------------------------------------------- names


def file_ext(path: str | Path) -> str:
    """Lower-case extension, treating ``.nii.gz`` as one extension."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def strip_ext(path: str | Path) -> str:
    """File name without its (possibly double) extension: ``a/x.nii.gz`` -> ``x``."""
    name = Path(path).name
    ext = file_ext(name)
    return name[: len(name) - len(ext)] if ext else name


def is_image_file(path: Path) -> bool:
    """True for regular files with a supported extension (hidden files are skipped)."""
    return path.is_file() and not path.name.startswith(".") and file_ext(path) in IMAGE_EXTENSIONS


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``2`` before ``10`` (frame numbers, slice indices)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def list_image_files(folder: Path) -> list[Path]:
    """Supported image files directly inside ``folder``, naturally sorted."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: natural_key(p.name))


# ----------------------------------------------------------------------------- raw readers


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file does not exist", path)
    if not path.is_file():
        raise DataError("is not a file", path)


def _pil_array(path: Path, *, as_mask: bool) -> tuple[np.ndarray, str]:
    """Pixel array (H,W) or (H,W,C) and original dtype name via Pillow."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # force decoding now so truncated files fail here, not later
            mode = im.mode
            if mode == "1":
                return np.asarray(im, dtype=bool).astype(np.uint8), "bool"
            if mode == "P":
                if as_mask:
                    # palette masks store class indices; the palette is only a display colour
                    return np.asarray(im), "uint8"
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("LA", "La"):
                im = im.convert("L")
            elif mode == "PA":
                if as_mask:
                    return np.asarray(im)[..., 0], "uint8"
                im = im.convert("RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBa"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        raise DataError(f"cannot read image ({type(exc).__name__}: {exc})", path) from exc
    return arr, arr.dtype.name


def _tiff_array(path: Path, *, as_mask: bool) -> tuple[np.ndarray, str]:
    """Pixel array via tifffile (handles RGB TIFFs Pillow rejects), falling back to Pillow."""
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(path))
    except Exception as tiff_exc:
        try:
            return _pil_array(path, as_mask=as_mask)
        except DataError:
            raise DataError(f"cannot read TIFF ({type(tiff_exc).__name__}: {tiff_exc})", path) from tiff_exc
    dtype = arr.dtype.name
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    # planar (C,H,W) TIFFs -> channels last so both TIFF layouts look like Pillow output
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr, dtype


def _nifti_array(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray, str]:
    """NIfTI data in nibabel axis order with 2D singleton/vector axes squeezed.

    Returns (array, spacing, affine, dtype) where array is spatial, or spatial + trailing
    channel axis for 4D (X,Y,Z,C) files.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
        # zooms are float32 in the header; 7 significant digits turns 0.699999988 back into 0.7
        zooms = tuple(float(f"{float(z):.7g}") for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=np.float64)
        dtype = img.get_data_dtype().name
    except Exception as exc:
        raise DataError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path) from exc
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector images are (X,Y,Z,1,C)
        arr = arr[:, :, :, 0, :]
    if arr.ndim == 2:
        return arr, zooms[:2], affine, dtype
    if arr.ndim == 3:
        if arr.shape[2] == 1:  # a 2D image stored with a singleton third axis
            return arr[:, :, 0], zooms[:2], affine, dtype
        return arr, zooms[:3], affine, dtype
    if arr.ndim == 4:
        if arr.shape[2] == 1:
            return arr[:, :, 0, :], zooms[:2], affine, dtype
        return arr, zooms[:3], affine, dtype
    raise DataError(f"unsupported NIfTI shape {arr.shape}", path)


def _hdf5_array(path: Path, key: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Dataset ``key`` of an HDF5 file plus the file's attributes."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DataError(f"no '{key}' dataset (found: {sorted(f.keys())})", path)
            arr = np.asarray(f[key][()])
            attrs = dict(f.attrs)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read HDF5 ({type(exc).__name__}: {exc})", path) from exc
    return arr, attrs


def _npy_array(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise DataError(f"cannot read .npy ({type(exc).__name__}: {exc})", path) from exc


def _array_channels_first(arr: np.ndarray) -> np.ndarray:
    """Channels-first layout for arrays from HDF5/.npy (no header says which axis is what).

    2D -> one channel; 3D -> a volume unless the last axis looks like RGB(A) of a 2D image;
    4D -> assumed already channels first.
    """
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 4:
            return np.moveaxis(arr[..., :3], -1, 0)
        return arr[None]
    if arr.ndim == 4:
        return arr
    raise ValueError(f"unsupported array shape {arr.shape}")


def _raster_channels_first(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H,W) / (H,W,C) pixel arrays -> (C,H,W), dropping alpha."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        c = arr.shape[-1]
        if c == 2:  # grey + alpha
            return arr[None, :, :, 0]
        if c == 4:
            arr = arr[..., :3]
        if c in (1, 3, 4):
            return np.moveaxis(arr, -1, 0)
        # multi-page TIFF: a (D,H,W) volume
        return arr[None]
    raise DataError(f"unsupported image shape {arr.shape}", path)


def _check_finite(arr: np.ndarray, path: Path) -> None:
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(
                f"image contains {int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} Inf values", path
            )


# ----------------------------------------------------------------------------- public readers


def read_image(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an image as float32 channels-first without rescaling intensities.

    Returns ``(image, info)`` with info keys ``spacing`` (tuple or None), ``affine`` (4x4 or
    None) and ``dtype`` (original dtype name). 2D files give (C,H,W); NIfTI volumes give
    (C,X,Y,Z) in nibabel axis order.
    """
    path = Path(path)
    _require_file(path)
    ext = file_ext(path)
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    if ext in RASTER_EXTENSIONS:
        arr, dtype = _pil_array(path, as_mask=False)
        img = _raster_channels_first(arr, path)
    elif ext in TIFF_EXTENSIONS:
        arr, dtype = _tiff_array(path, as_mask=False)
        img = _raster_channels_first(arr, path)
    elif ext in NIFTI_EXTENSIONS:
        arr, spacing, affine, dtype = _nifti_array(path)
        # 4D (X,Y,Z,C) files carry channels last; move them first
        img = np.moveaxis(arr, -1, 0) if _nifti_has_channels(arr, spacing) else arr[None]
    elif ext in HDF5_EXTENSIONS:
        arr, attrs = _hdf5_array(path, "image")
        dtype = arr.dtype.name
        try:
            img = _array_channels_first(arr)
        except ValueError as exc:
            raise DataError(str(exc), path) from exc
        if "spacing" in attrs:
            spacing = tuple(float(s) for s in np.ravel(attrs["spacing"]))
    elif ext == ".npy":
        arr = _npy_array(path)
        dtype = arr.dtype.name
        try:
            img = _array_channels_first(arr)
        except ValueError as exc:
            raise DataError(str(exc), path) from exc
    else:
        raise DataError(f"unsupported file type '{ext}' (supported: {', '.join(IMAGE_EXTENSIONS)})", path)
    if img.dtype.kind not in "biuf":
        raise DataError(f"unsupported pixel type {img.dtype}", path)
    _check_finite(img, path)
    img = np.ascontiguousarray(img, dtype=np.float32)
    if spacing is not None and len(spacing) != img.ndim - 1:
        spacing = None  # e.g. HDF5 attrs describing another layout: better none than wrong
    return img, {"spacing": spacing, "affine": affine, "dtype": dtype}


def _nifti_has_channels(arr: np.ndarray, spacing: tuple[float, ...]) -> bool:
    """True when the squeezed NIfTI array carries a trailing channel axis."""
    return arr.ndim == len(spacing) + 1


def _to_single_channel_mask(arr: np.ndarray, path: Path) -> np.ndarray:
    """Collapse RGB(A) masks with equal channels to one channel."""
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(
                "colour mask with unequal R, G, B channels; expected a grey-level or index mask", path
            )
        return rgb[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0]
    return arr


def _normalise_labels(arr: np.ndarray, path: Path, num_classes: int | None) -> np.ndarray:
    """Map binary {0,255} masks to {0,1} and validate class indices."""
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError("mask contains NaN/Inf values", path)
        if not np.array_equal(arr, np.round(arr)):
            raise DataError("mask contains non-integer values; expected class indices", path)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"unsupported mask pixel type {arr.dtype}", path)
    values = np.unique(arr)
    value_set = set(values.tolist())
    binary_255 = value_set <= {0, 255}
    if binary_255 and 255 in value_set and (num_classes is None or num_classes <= 255):
        return (arr == 255).astype(np.int64)
    out = arr.astype(np.int64)
    if num_classes is not None:
        bad = [int(v) for v in values if v < 0 or v >= num_classes]
    else:
        bad = [int(v) for v in values if v < 0]
    if bad:
        shown = [int(v) for v in values[:20]]
        expected = f"0..{num_classes - 1}" if num_classes is not None else "non-negative integers"
        raise DataError(
            f"unexpected label values {bad[:20]} (values present: {shown}); "
            f"expected class indices {expected} or {{0,255}} for a binary mask" + _threshold_hint(arr),
            path,
        )
    return out


THRESHOLD_HINT = ("; the values look like a lossy-compressed (JPEG) binary mask: set mask_threshold: 128 in the "
                  "dataset YAML (or --set data.mask_threshold=128) to binarise it")


def looks_compressed_binary(arr: np.ndarray) -> bool:
    """True when most values sit near 0 and near 255 with a few in between (JPEG ringing of a 0/255 mask)."""
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        return False
    low, high = float(np.mean(arr <= 32)), float(np.mean(arr >= 223))
    return low > 0.01 and high > 0.01 and low + high > 0.9


def _threshold_hint(arr: np.ndarray) -> str:
    return THRESHOLD_HINT if looks_compressed_binary(arr) else ""


def _threshold_mask(arr: np.ndarray, threshold: int) -> np.ndarray:
    """Binarise a grey (or RGB, by channel mean) mask: values >= ``threshold`` are foreground.

    Masks already in {0,1} are kept: the threshold is meant for 0..255 values.
    """
    if arr.size and int(arr.max()) <= 1:
        return arr if arr.ndim == 2 else _threshold_mask(arr * 255, threshold)
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = arr[..., :3].mean(axis=-1) if arr.shape[-1] != 2 else arr[..., 0]
    return (arr >= threshold).astype(np.uint8)


def read_mask(path: str | Path, num_classes: int | None = None, threshold: int | None = None) -> np.ndarray:
    """Read a label map as int64 class indices of the spatial shape.

    Binary masks stored as {0,255} become {0,1}; RGB masks must have equal channels; other
    values must lie in ``0..num_classes-1`` when ``num_classes`` is given. ``threshold``
    (``mask_threshold``) binarises raster masks first: values >= threshold are foreground,
    for binary masks saved with lossy (JPEG) compression.
    """
    path = Path(path)
    _require_file(path)
    ext = file_ext(path)
    if ext in RASTER_EXTENSIONS + TIFF_EXTENSIONS:
        reader = _pil_array if ext in RASTER_EXTENSIONS else _tiff_array
        arr, _ = reader(path, as_mask=True)
        if threshold is not None:
            arr = _threshold_mask(arr, threshold)
        else:
            try:
                arr = _to_single_channel_mask(arr, path)
            except DataError as exc:
                raise DataError(exc.problem + _threshold_hint(arr), path) from None
    elif ext in NIFTI_EXTENSIONS:
        arr, spacing, _, _ = _nifti_array(path)
        if arr.ndim == len(spacing) + 1:  # trailing channel axis: only a singleton one is a mask
            if arr.shape[-1] != 1:
                raise DataError(f"mask has {arr.shape[-1]} channels (shape {arr.shape}); expected one", path)
            arr = arr[..., 0]
    elif ext in HDF5_EXTENSIONS:
        arr, _ = _hdf5_array(path, "label")
    elif ext == ".npy":
        arr = _npy_array(path)
    else:
        raise DataError(f"unsupported mask file type '{ext}'", path)
    if arr.ndim not in (2, 3):
        raise DataError(f"mask has unsupported shape {arr.shape}; expected 2D or 3D", path)
    return np.ascontiguousarray(_normalise_labels(arr, path, num_classes))


def merge_masks(labels: Sequence[np.ndarray], paths: Sequence[Path]) -> np.ndarray:
    """Union of several label maps of one image (several lesions / annotations in separate files).

    A pixel takes the non-background class any mask gives it; two masks giving it different
    non-background classes is a DataError naming both files (no rule could pick one).
    """
    out = labels[0].copy()
    for label, path in zip(labels[1:], paths[1:]):
        if label.shape != out.shape:
            raise DataError(f"mask shape {label.shape} differs from {paths[0].name}'s {out.shape}", path)
        clash = (out > 0) & (label > 0) & (out != label)
        if clash.any():
            raise DataError(f"{int(clash.sum())} pixel(s) have another non-background class than in the other "
                            f"mask(s) of this image ({', '.join(p.name for p in paths if p != path)}); "
                            "cannot merge them", path)
        out = np.where(label > 0, label, out)
    return out


def read_case_files(
    image_paths: Sequence[str | Path] | str | Path,
    mask_path: str | Path | Sequence[str | Path] | None,
    case_id: str,
    num_classes: int | None = None,
    group: str | None = None,
    mask_threshold: int | None = None,
) -> Case:
    """Read one case: image channel files (stacked in order) and an optional mask.

    Several mask files (a list) are merged with :func:`merge_masks`; ``mask_threshold``
    binarises raster masks (see :func:`read_mask`).
    """
    paths = [Path(image_paths)] if isinstance(image_paths, (str, Path)) else [Path(p) for p in image_paths]
    if not paths:
        raise DataError(f"case '{case_id}' has no image files")
    images: list[np.ndarray] = []
    info: dict[str, Any] = {}
    for i, p in enumerate(paths):
        img, inf = read_image(p)
        if i == 0:
            info = inf
        elif img.shape[1:] != images[0].shape[1:]:
            raise DataError(
                f"channel file {p} has spatial shape {img.shape[1:]} but {paths[0]} has {images[0].shape[1:]}",
                p,
            )
        images.append(img)
    image = images[0] if len(images) == 1 else np.concatenate(images, axis=0)
    label = None
    mask_paths = [] if mask_path is None else (
        [Path(mask_path)] if isinstance(mask_path, (str, Path)) else [Path(p) for p in mask_path])
    mask_path = mask_paths[0] if mask_paths else None
    if mask_path is not None:
        labels = [read_mask(p, num_classes, mask_threshold) for p in mask_paths]
        label = labels[0] if len(labels) == 1 else merge_masks(labels, mask_paths)
        if label.shape != image.shape[1:]:
            raise DataError(
                f"mask shape {label.shape} does not match image {paths[0]} spatial shape {image.shape[1:]}",
                mask_path,
            )
    meta: dict[str, Any] = {
        "image_paths": [str(p) for p in paths],
        "mask_path": str(mask_path) if mask_path is not None else None,
        **({"mask_paths": [str(p) for p in mask_paths]} if len(mask_paths) > 1 else {}),
        "dtype": info.get("dtype"),
        "format": file_ext(paths[0]),
    }
    return Case(
        case_id=case_id,
        image=image,
        label=label,
        spacing=info.get("spacing"),
        affine=info.get("affine"),
        group=group,
        meta=meta,
    )


# ----------------------------------------------------------------------------- writing


def write_mask(
    path: str | Path,
    mask: np.ndarray,
    affine: np.ndarray | None = None,
    binary_as_255: bool = True,
) -> Path:
    """Write a class-index mask; binary raster masks are stored as {0,255} by default.

    ``.png``/``.bmp``/``.tif(f)`` -> uint8 raster, ``.nii``/``.nii.gz`` -> uint8 NIfTI with
    ``affine`` (identity if None), ``.npy`` -> uint8 (or int64 beyond 255 classes).
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.size and (mask.min() < 0 or mask.max() > 255) and file_ext(path) != ".npy":
        raise DataError(f"mask values {int(mask.min())}..{int(mask.max())} do not fit uint8", path)
    ext = file_ext(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    is_binary = mask.size == 0 or int(mask.max()) <= 1
    if ext in (".png", ".bmp") + TIFF_EXTENSIONS:
        if mask.ndim != 2 and ext not in TIFF_EXTENSIONS:
            raise DataError(f"cannot write a {mask.ndim}D mask as {ext}; use .nii.gz", path)
        out = mask.astype(np.uint8)
        if is_binary and binary_as_255:
            out = out * 255  # viewable in any image viewer and matches the common {0,255} convention
        if ext in TIFF_EXTENSIONS:
            import tifffile

            tifffile.imwrite(path, out)
        else:
            from PIL import Image

            Image.fromarray(out, mode="L").save(path)
    elif ext in NIFTI_EXTENSIONS:
        import nibabel as nib

        img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4) if affine is None else np.asarray(affine))
        img.set_data_dtype(np.uint8)
        nib.save(img, str(path))
    elif ext == ".npy":
        np.save(path, mask.astype(np.uint8 if mask.size == 0 or mask.max() <= 255 else np.int64))
    elif ext in (".jpg", ".jpeg"):
        raise DataError("refusing to write a mask as JPEG: lossy compression changes label values", path)
    else:
        raise DataError(f"unsupported mask file type '{ext}'", path)
    return path
