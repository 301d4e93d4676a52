"""Open a dataset from a path by recognising its layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from qgseg.data.check import swapped_folders
from qgseg.data.datasets import (
    SegDataset,
    flat_image_folder,
    h5_lists_folder,
    h5_volume_file,
    open_with_reader,
    read_csv_list,
    read_dataset_yaml,
    read_folder,
    read_h5_volumes,
    read_msd,
    read_paired_folder,
    read_ssl4mis,
    read_unlabeled_folder,
)
from qgseg.data.io import DataError, is_image_file, list_image_files
from qgseg.data.pairing import split_mask_named

EXPECTED_LAYOUTS = (
    "a folder with dataset.json (MSD / nnU-Net), a folder with *.list files and data/ (SSL4MIS), "
    "*.list files naming <ID>/*.h5 volumes (LA / UA-MT), a folder with images/ and masks/, one folder of "
    "images and masks told apart by name (X.png + X_mask.png), a folder of images (unlabeled), "
    "a .csv list or a dataset .yaml"
)
#: Share of a flat folder's files that must be masks of other files for it to be read as pairs; below
#: it the mask-named files are reported as problems of an unlabeled folder.
PAIRED_SHARE = 0.25


def _is_h5_volumes(path: Path) -> bool:
    """``*.list`` files whose first ID has a folder ``<ID>/`` with an .h5 file (not SSL4MIS ``data/<ID>.h5``)."""
    folder = h5_lists_folder(path)
    if folder is None:
        return False
    for lst in sorted(folder.glob("*.list")):
        names = [ln.strip() for ln in lst.read_text(errors="replace").splitlines() if ln.strip()]
        if names:
            return h5_volume_file(folder, names[0]) is not None
    return False


def _is_paired_folder(path: Path) -> bool:
    """A flat folder in which a large share of files are named as masks of other files."""
    files = list_image_files(flat_image_folder(path))
    _, masks = split_mask_named(files)
    return bool(files) and len(masks) >= PAIRED_SHARE * len(files)


def detect_format(path: Path) -> str:
    """Name of the reader for ``path``: msd, ssl4mis, h5volumes, folder, paired, unlabeled, csv or yaml."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return "csv"
        if suffix in (".yaml", ".yml"):
            return "yaml"
        raise DataError(f"unsupported dataset file; expected {EXPECTED_LAYOUTS}", path)
    if (path / "dataset.json").is_file():
        return "msd"
    if (path / "dataset.yaml").is_file():  # a folder that describes itself (classes, options)
        return "yaml"
    if _is_h5_volumes(path):
        return "h5volumes"
    if any(path.glob("*.list")) and (path / "data").is_dir():
        return "ssl4mis"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "folder"
    if (path / "images").is_dir() or any(is_image_file(p) for p in path.iterdir()):
        return "paired" if _is_paired_folder(path) else "unlabeled"
    raise DataError(f"unrecognised dataset layout; expected {EXPECTED_LAYOUTS}", path)


def open_dataset(spec: str | Path, classes: Sequence[str] | int | None = None, **options: Any) -> SegDataset:
    """Open ``spec`` (folder, .csv or .yaml) with the matching reader.

    ``options`` go to the reader (e.g. ``mask_pattern`` for folders; ``mask_threshold`` for
    any). Raises DataError for a missing path, an unknown layout, an unknown option (naming
    the valid ones), folders whose images and masks look swapped, or a dataset without cases.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"dataset path does not exist; expected {EXPECTED_LAYOUTS}", path)
    fmt = detect_format(path)
    readers = {
        "msd": read_msd,
        "ssl4mis": read_ssl4mis,
        "h5volumes": read_h5_volumes,
        "folder": read_folder,
        "paired": read_paired_folder,
        "unlabeled": read_unlabeled_folder,
        "csv": read_csv_list,
        "yaml": read_dataset_yaml,
    }
    if fmt == "yaml" and path.is_dir():
        path = path / "dataset.yaml"
    options = {k: v for k, v in options.items() if not (k == "mask_threshold" and v is None)}
    ds = open_with_reader(readers[fmt], path, classes, options, fmt)
    swapped = swapped_folders(ds)
    if swapped:
        raise DataError(swapped, ds.root)
    if len(ds) == 0:
        detail = "; ".join(str(p) for p in ds.problems[:5])
        raise DataError(
            f"no cases found in this {fmt} dataset" + (f" ({detail})" if detail else ""), path
        )
    return ds
