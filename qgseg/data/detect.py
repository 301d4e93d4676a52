"""Open a dataset from a path by recognising its layout."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Sequence

from qgseg.data.datasets import (
    SegDataset,
    read_csv_list,
    read_dataset_yaml,
    read_folder,
    read_msd,
    read_ssl4mis,
    read_unlabeled_folder,
)
from qgseg.data.io import DataError, is_image_file

EXPECTED_LAYOUTS = (
    "a folder with dataset.json (MSD / nnU-Net), a folder with *.list files and data/ (SSL4MIS), "
    "a folder with images/ and masks/, a folder of images (unlabeled), a .csv list or a dataset .yaml"
)


def detect_format(path: Path) -> str:
    """Name of the reader for ``path``: msd, ssl4mis, folder, unlabeled, csv or yaml."""
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
    if any(path.glob("*.list")) and (path / "data").is_dir():
        return "ssl4mis"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "folder"
    if (path / "images").is_dir() or any(is_image_file(p) for p in path.iterdir()):
        return "unlabeled"
    raise DataError(f"unrecognised dataset layout; expected {EXPECTED_LAYOUTS}", path)


def open_dataset(spec: str | Path, classes: Sequence[str] | int | None = None, **options: Any) -> SegDataset:
    """Open ``spec`` (folder, .csv or .yaml) with the matching reader.

    ``options`` go to the reader (e.g. ``mask_pattern`` for folders). Raises DataError for a
    missing path, an unknown layout or a dataset without cases.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"dataset path does not exist; expected {EXPECTED_LAYOUTS}", path)
    fmt = detect_format(path)
    readers = {
        "msd": read_msd,
        "ssl4mis": read_ssl4mis,
        "folder": read_folder,
        "unlabeled": read_unlabeled_folder,
        "csv": read_csv_list,
        "yaml": read_dataset_yaml,
    }
    reader = readers[fmt]
    if fmt == "yaml" and path.is_dir():
        path = path / "dataset.yaml"
    try:  # bind first so a typo in options is reported as such, not as a crash inside the reader
        inspect.signature(reader).bind(path, classes=classes, **options)
    except TypeError as exc:
        raise DataError(f"bad options for a {fmt} dataset: {exc}", path) from exc
    ds = reader(path, classes=classes, **options)
    if len(ds) == 0:
        detail = "; ".join(str(p) for p in ds.problems[:5])
        raise DataError(
            f"no cases found in this {fmt} dataset" + (f" ({detail})" if detail else ""), path
        )
    return ds
