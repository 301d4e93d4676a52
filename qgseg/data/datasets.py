"""Lazy segmentation datasets and the readers that index each supported on-disk layout.

Indexing never reads pixel data and never raises for broken or unpaired files: those become
``problems`` so that :func:`qgseg.data.check.check_dataset` can report all of them at once.
Loading a broken case raises :class:`DataError`.
"""
from __future__ import annotations

import csv
import difflib
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from qgseg.data.case import Case
from qgseg.data.io import (
    HDF5_EXTENSIONS,
    NIFTI_EXTENSIONS,
    DataError,
    file_ext,
    is_image_file,
    list_image_files,
    natural_key,
    read_case_files,
    strip_ext,
)
from qgseg.data.pairing import pair_files, split_mask_named
from qgseg.data.splits import read_split_file

BINARY_CLASSES: list[str] = ["background", "foreground"]
ACDC_CLASSES: list[str] = ["background", "right_ventricle", "myocardium", "left_ventricle"]


@dataclass
class DataProblem:
    """One problem found in a dataset, tied to a file (or folder)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CaseEntry:
    """Index record of one case: where its files are, nothing loaded yet."""

    case_id: str
    image_paths: list[Path]
    mask_path: Path | None = None
    group: str | None = None
    kind: str = "image"
    extra: dict[str, Any] = field(default_factory=dict)
    extra_mask_paths: list[Path] = field(default_factory=list)  # further masks of the image, merged on load

    @property
    def mask_paths(self) -> list[Path]:
        """Every mask file of the case (the main one first); empty when unlabeled."""
        return [] if self.mask_path is None else [self.mask_path, *self.extra_mask_paths]


Loader = Callable[..., Case]  # (entry, num_classes[, mask_threshold=...]) -> Case


def load_entry(entry: CaseEntry, num_classes: int, mask_threshold: int | None = None) -> Case:
    """Default loader: read the entry's files with :func:`read_case_files` (several masks are merged)."""
    masks = entry.mask_paths if entry.extra_mask_paths else entry.mask_path
    case = read_case_files(entry.image_paths, masks, entry.case_id, num_classes, entry.group, mask_threshold)
    case.meta["kind"] = entry.kind
    case.meta.update(entry.extra)
    return case


def resolve_classes(classes: Sequence[str] | int | None, default: Sequence[str]) -> list[str]:
    """Class names from a list, a count (``["background", "class1", ...]``) or a default."""
    if classes is None:
        names = list(default)
    elif isinstance(classes, (int, np.integer)):
        if classes < 2:
            raise DataError(f"need at least 2 classes (background + one), got {classes}")
        names = ["background"] + [f"class{i}" for i in range(1, int(classes))]
    else:
        names = [str(c) for c in classes]
    if len(names) < 2:
        raise DataError(f"need at least 2 classes (background + one), got {names}")
    return names


class SegDataset:
    """A lazily loaded, ordered collection of segmentation cases.

    Attributes:
        name: dataset name (folder name by default).
        root: folder the dataset was read from.
        classes: class names, index 0 is background.
        spatial_dims: 2 or 3, the dimensionality used for training.
        ids: case ids in dataset order.
        groups: case id -> group (patient, sequence) or None.
        splits: predefined splits found with the data (split name -> ids), possibly empty.
        problems: problems found while indexing (unpaired files, missing files...).
        notes: non-fatal information about how the data was read (merged masks, a masks
            sub-folder used...), printed by ``data check`` and once by training.
        mask_threshold: binarise raster masks at this grey value (``None``: masks are read as is).
    """

    def __init__(
        self,
        name: str,
        root: str | Path,
        entries: Sequence[CaseEntry],
        classes: Sequence[str] | None = None,
        spatial_dims: int = 2,
        splits: dict[str, list[str]] | None = None,
        problems: list[DataProblem] | None = None,
        loader: Loader | None = None,
        notes: list[str] | None = None,
        mask_threshold: int | None = None,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.notes: list[str] = list(notes or [])
        self.mask_threshold = mask_threshold
        self.classes: list[str] = list(classes) if classes is not None else list(BINARY_CLASSES)
        self.spatial_dims = spatial_dims
        self.problems: list[DataProblem] = list(problems or [])
        self._loader: Loader = loader or load_entry
        self._entries: dict[str, CaseEntry] = {}
        for e in entries:
            if e.case_id in self._entries:
                self.problems.append(DataProblem(str(e.image_paths[0]), f"duplicate case id '{e.case_id}' skipped"))
                continue
            self._entries[e.case_id] = e
        self.ids: list[str] = list(self._entries)
        self.groups: dict[str, str | None] = {i: e.group for i, e in self._entries.items()}
        self.splits: dict[str, list[str]] = {}
        for split, split_ids in (splits or {}).items():
            known = [i for i in split_ids if i in self._entries]
            if len(known) < len(split_ids):
                missing = [i for i in split_ids if i not in self._entries]
                self.problems.append(
                    DataProblem(f"split '{split}'", f"{len(missing)} ids not in the dataset: {missing[:10]}")
                )
            self.splits[split] = known

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        splits = {k: len(v) for k, v in self.splits.items()}
        return (
            f"SegDataset(name={self.name!r}, cases={len(self)}, classes={self.classes}, "
            f"spatial_dims={self.spatial_dims}, splits={splits}, problems={len(self.problems)})"
        )

    def entry(self, case_id: str) -> CaseEntry:
        """Index record of ``case_id`` (KeyError if unknown)."""
        try:
            return self._entries[case_id]
        except KeyError:
            raise KeyError(f"case '{case_id}' is not in dataset '{self.name}'") from None

    def load(self, case_id: str) -> Case:
        """Read case ``case_id`` from disk (DataError if its files are broken)."""
        if self.mask_threshold is None:
            case = self._loader(self.entry(case_id), self.num_classes)
        else:
            case = self._loader(self.entry(case_id), self.num_classes, mask_threshold=self.mask_threshold)
        case.meta.setdefault("dataset", self.name)
        return case

    def __getitem__(self, i: int) -> Case:
        return self.load(self.ids[i])

    def __iter__(self) -> Iterator[Case]:
        for case_id in self.ids:
            yield self.load(case_id)

    def has_labels(self, case_id: str) -> bool:
        """True when the case has a mask."""
        return self.entry(case_id).mask_path is not None

    @property
    def labeled_ids(self) -> list[str]:
        return [i for i in self.ids if self._entries[i].mask_path is not None]

    @property
    def unlabeled_ids(self) -> list[str]:
        return [i for i in self.ids if self._entries[i].mask_path is None]

    def subset(self, ids: Sequence[str], name: str | None = None) -> "SegDataset":
        """A dataset restricted to ``ids`` (in the given order); splits are restricted too.

        Indexing problems of the parent are not carried over: they concern files outside the
        subset.
        """
        entries = [self.entry(i) for i in ids]
        keep = set(ids)
        splits = {k: [i for i in v if i in keep] for k, v in self.splits.items()}
        splits = {k: v for k, v in splits.items() if v}
        return SegDataset(
            name or f"{self.name}[subset]",
            self.root,
            entries,
            self.classes,
            self.spatial_dims,
            splits,
            None,
            self._loader,
            mask_threshold=self.mask_threshold,
        )


# ----------------------------------------------------------------------------- helpers


def _read_splits_dir(root: Path, problems: list[DataProblem]) -> dict[str, list[str]]:
    """``root/splits/<name>.txt`` -> {name: ids}."""
    splits: dict[str, list[str]] = {}
    folder = root / "splits"
    if folder.is_dir():
        for f in sorted(folder.glob("*.txt")):
            try:
                splits[f.stem] = read_split_file(f)
            except DataError as exc:
                problems.append(DataProblem(str(f), exc.problem))
    return splits


_HEADER_WORDS = {"frame", "id", "case", "case_id", "image", "image_id", "name", "filename", "file"}


def _read_group_csv(path: Path, problems: list[DataProblem]) -> dict[str, str]:
    """Two-column CSV (case id or frame file, group) -> {id: group}; a header row is optional."""
    groups: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except OSError as exc:
        problems.append(DataProblem(str(path), f"cannot read ({exc})"))
        return groups
    if rows and rows[0][0].strip().lower() in _HEADER_WORDS:
        rows = rows[1:]
    for n, row in enumerate(rows, start=1):
        if len(row) < 2:
            problems.append(DataProblem(str(path), f"row {n} has {len(row)} column(s); expected id,group"))
            continue
        groups[strip_ext(row[0].strip())] = row[1].strip()
    return groups


def _probe_spatial_dims(path: Path) -> int:
    """Spatial dimensionality of a file from its header (no pixel data read where avoidable)."""
    ext = file_ext(path)
    try:
        if ext in NIFTI_EXTENSIONS:
            import nibabel as nib

            shape = [s for s in nib.load(str(path)).shape]
            if len(shape) >= 3 and shape[2] == 1:
                return 2
            return 3 if len(shape) >= 3 else 2
        if ext in HDF5_EXTENSIONS:
            import h5py

            with h5py.File(path, "r") as f:
                return 3 if f["image"].ndim >= 3 else 2
        if ext == ".npy":
            return 3 if np.load(path, mmap_mode="r").ndim == 4 else 2
    except Exception:
        pass  # unreadable files are reported when loaded; 2D is the safe guess here
    return 2


# ----------------------------------------------------------------------------- readers


def _image_dirs(folder: Path) -> list[Path]:
    """Relative paths of ``folder`` and its (nested, non-hidden) sub-folders that hold image files."""
    out: list[Path] = []
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        here = Path(dirpath)
        if any(is_image_file(p) for p in here.iterdir()):
            out.append(here.relative_to(folder))
    return out


def _case_prefix(rel: Path) -> str:
    """Case-id prefix of a nested folder (``siteA/``): repeating names in per-source folders stay distinct."""
    return "" if str(rel) == "." else rel.as_posix() + "/"


def _pair_entries(images: list[Path], masks: list[Path], mask_pattern: str | None, image_pattern: str | None,
                  problems: list[DataProblem], notes: list[str], prefix: str = "") -> list[CaseEntry]:
    """Labeled entries of paired files; unpaired/ambiguous files become problems, merged masks notes."""
    try:
        result = pair_files(images, masks, mask_pattern, image_pattern, merge_numbered=True)
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    problems.extend(DataProblem(str(path), message) for path, message in result.problems())
    notes.extend(result.notes())
    return [CaseEntry(prefix + cid, [img], msk, extra_mask_paths=result.extra_masks.get(img, []))
            for cid, img, msk in result.pairs]


def _masks_folder(msk_dir: Path, img_dir: Path, notes: list[str]) -> Path:
    """The folder that holds the masks: ``masks/`` itself, or its only sub-folder (``masks/0/``).

    Several sub-folders beside flat images (one per class or per annotator) are refused: which
    one to use, or how to combine them, is the user's decision.
    """
    if not msk_dir.is_dir() or any(is_image_file(p) for p in msk_dir.iterdir()):
        return msk_dir
    subs = sorted((d for d in msk_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: natural_key(d.name))
    image_subs = {d.name for d in img_dir.iterdir() if d.is_dir()}
    if not subs or image_subs:  # nested per-source layout: masks/<site>/ mirrors images/<site>/
        return msk_dir
    if len(subs) == 1:
        notes.append(f"masks read from {msk_dir.name}/{subs[0].name}/, the only sub-folder of {msk_dir.name}/")
        return subs[0]
    names = ", ".join(d.name for d in subs)
    raise DataError(
        f"holds only sub-folders ({names}) and {img_dir.name}/ has none: one mask folder per class or per "
        f"annotator is not read automatically; choose one with masks_dir: {msk_dir.name}/{subs[0].name} in a "
        "dataset YAML (format: folder), or merge them into one label map per image", msk_dir)


def _apply_groups(root: Path, entries: list[CaseEntry], problems: list[DataProblem]) -> None:
    """Groups from ``sequences.csv`` or ``groups.csv`` (id, group) beside the data."""
    for name in ("sequences.csv", "groups.csv"):
        if (root / name).is_file():
            groups = _read_group_csv(root / name, problems)
            for e in entries:
                e.group = groups.get(e.case_id)
            break


def read_folder(
    root: str | Path,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_pattern: str | None = None,
    image_pattern: str | None = None,
    classes: Sequence[str] | int | None = None,
) -> SegDataset:
    """``root/images`` + ``root/masks`` paired by stem.

    Nested per-source folders (``images/siteA/1.png`` + ``masks/siteA/1.png``) pair folder by
    folder, with case ids ``siteA/1``; a ``masks/`` holding one sub-folder (``masks/0/``) is
    read from it. Optional extras: ``splits/<name>.txt``; ``sequences.csv`` or ``groups.csv``
    (id, group); ``unlabeled/images/`` (extra unlabeled cases, split "unlabeled"). Without a
    masks folder every image is unlabeled.
    """
    root = Path(root)
    problems: list[DataProblem] = []
    notes: list[str] = []
    img_dir = root / images_dir
    if not img_dir.is_dir():
        raise DataError(f"no '{images_dir}/' folder; expected {images_dir}/ and {masks_dir}/ inside it", root)
    msk_dir = _masks_folder(root / masks_dir, img_dir, notes)
    entries: list[CaseEntry] = []
    splits = _read_splits_dir(root, problems)
    image_rels = _image_dirs(img_dir)
    if msk_dir.is_dir():
        rels = image_rels + [r for r in _image_dirs(msk_dir) if r not in image_rels]
        for rel in rels:
            images = list_image_files(img_dir / rel) if (img_dir / rel).is_dir() else []
            masks = list_image_files(msk_dir / rel) if (msk_dir / rel).is_dir() else []
            entries += _pair_entries(images, masks, mask_pattern, image_pattern, problems, notes, _case_prefix(rel))
    else:
        entries = [CaseEntry(_case_prefix(rel) + strip_ext(p), [p], None)
                   for rel in image_rels for p in list_image_files(img_dir / rel)]
        splits.setdefault("unlabeled", [e.case_id for e in entries])
    _apply_groups(root, entries, problems)

    unl_dir = root / "unlabeled" / "images"
    if unl_dir.is_dir():
        unl = [CaseEntry(strip_ext(p), [p], None) for p in list_image_files(unl_dir)]
        entries.extend(unl)
        splits.setdefault("unlabeled", []).extend(e.case_id for e in unl)

    spatial = _probe_spatial_dims(entries[0].image_paths[0]) if entries else 2
    return SegDataset(root.name, root, entries, resolve_classes(classes, BINARY_CLASSES), spatial, splits, problems,
                      notes=notes)


def flat_image_folder(root: Path) -> Path:
    """The folder holding a flat image set: ``root/images`` when present, else ``root``."""
    return root / "images" if (root / "images").is_dir() else root


def read_paired_folder(
    root: str | Path,
    mask_pattern: str | None = None,
    image_pattern: str | None = None,
    classes: Sequence[str] | int | None = None,
) -> SegDataset:
    """Images and masks in one folder, told apart by name (``X.png`` + ``X_mask.png``,
    ``X_orig.jpg`` + ``X_contour.png``; see :func:`~qgseg.data.pairing.split_mask_named`).

    ``mask_pattern`` / ``image_pattern`` (``"{stem}_contour"``, ``"{stem}_orig"``) state the
    naming when the automatic suffixes do not fit. Splits and groups as for :func:`read_folder`.
    """
    root = Path(root)
    folder = flat_image_folder(root)
    problems: list[DataProblem] = []
    notes: list[str] = []
    try:
        images, masks = split_mask_named(list_image_files(folder), mask_pattern, image_pattern)
    except ValueError as exc:
        raise DataError(str(exc), root) from exc
    entries = _pair_entries(images, masks, mask_pattern, image_pattern, problems, notes)
    splits = _read_splits_dir(root, problems)
    _apply_groups(root, entries, problems)
    spatial = _probe_spatial_dims(entries[0].image_paths[0]) if entries else 2
    return SegDataset(root.name, root, entries, resolve_classes(classes, BINARY_CLASSES), spatial, splits, problems,
                      notes=notes)


def read_unlabeled_folder(root: str | Path, classes: Sequence[str] | int | None = None) -> SegDataset:
    """A folder of images (``root/images`` or ``root`` itself) as unlabeled cases.

    Files named like masks of other files of the folder (``X_mask.png`` beside ``X.png``) are
    problems, not unlabeled images: a folder of pairs must not pass as an unlabeled set.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("folder does not exist", root)
    folder = flat_image_folder(root)
    files = list_image_files(folder)
    _, mask_named = split_mask_named(files)
    problems = [DataProblem(str(p), "named like a mask of another image in this folder; not read as an unlabeled "
                                    "image (move it out, or read the folder as pairs: format: paired)")
                for p in mask_named]
    skip = set(mask_named)
    entries = [CaseEntry(strip_ext(p), [p], None) for p in files if p not in skip]
    spatial = _probe_spatial_dims(entries[0].image_paths[0]) if entries else 2
    splits = {"unlabeled": [e.case_id for e in entries]}
    return SegDataset(root.name, root, entries, resolve_classes(classes, BINARY_CLASSES), spatial, splits, problems)


def read_csv_list(csv_path: str | Path, classes: Sequence[str] | int | None = None) -> SegDataset:
    """CSV with ``image_path`` and optional ``mask_path``, ``case_id``, ``group``, ``split``.

    Relative paths are resolved against the CSV's folder; several channel files may be given
    in ``image_path`` separated by ``;``. An empty mask_path means unlabeled. HDF5 files hold
    both: ``image_path`` = ``mask_path`` = ``x.h5`` reads its ``image`` and ``label`` datasets.
    A row with fewer or more fields than the header is a problem naming its line.
    """
    csv_path = Path(csv_path)
    problems: list[DataProblem] = []
    notes: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            for r in reader:
                # DictReader fills missing fields with None and puts surplus ones under the key None
                n_fields = sum(1 for k, v in r.items() if k is not None and v is not None) + len(r.get(None) or [])
                if n_fields != len(fields):
                    problems.append(DataProblem(f"{csv_path} line {reader.line_num}",
                                                f"line {reader.line_num} has {n_fields} field(s), header has "
                                                f"{len(fields)} ({','.join(fields)}); row not read"))
                    continue
                rows.append((reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in r.items()
                                               if k is not None}))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV ({exc})", csv_path) from exc
    image_col = next((c for c in ("image_path", "image") if c in fields), None)
    if image_col is None:
        raise DataError(f"no 'image_path' column (columns: {fields}); expected image_path[,mask_path,group,split]", csv_path)
    mask_col = next((c for c in ("mask_path", "mask", "label_path", "label") if c in fields), None)
    id_col = next((c for c in ("case_id", "id") if c in fields), None)
    base = csv_path.parent
    entries: list[CaseEntry] = []
    splits: dict[str, list[str]] = {}
    for n, row in rows:
        where = f"{csv_path} line {n}"
        if not row.get(image_col):
            problems.append(DataProblem(where, "empty image_path"))
            continue
        images = [base / p.strip() for p in row[image_col].split(";") if p.strip()]
        mask = base / row[mask_col] if mask_col and row.get(mask_col) else None
        missing = [p for p in [*images, mask] if p is not None and not p.is_file()]
        if missing:
            for p in missing:
                problems.append(DataProblem(str(p), f"file listed in {csv_path.name} line {n} does not exist"))
            continue
        cid = row.get(id_col) if id_col and row.get(id_col) else strip_ext(images[0])
        if mask is None and _h5_has_label(images[0]):
            notes.append(f"{images[0].name} (line {n}) has a 'label' dataset but an empty mask_path: read as "
                         "unlabeled (give the same file as mask_path to use its label)")
        entries.append(CaseEntry(cid, images, mask, row.get("group") or None))
        if row.get("split"):
            splits.setdefault(row["split"], []).append(cid)
    spatial = _probe_spatial_dims(entries[0].image_paths[0]) if entries else 2
    return SegDataset(
        csv_path.stem, base, entries, resolve_classes(classes, BINARY_CLASSES), spatial, splits, problems,
        notes=notes,
    )


def _h5_has_label(path: Path) -> bool:
    """True for an HDF5 file with a ``label`` dataset (header read only)."""
    if file_ext(path) not in HDF5_EXTENSIONS:
        return False
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return "label" in f
    except OSError:
        return False  # unreadable files are reported when loaded


def _msd_classes(labels: Any, json_path: Path) -> list[str]:
    """dataset.json ``labels`` (MSD {"0": "background"} or nnU-Net v2 {"background": 0})."""
    if not isinstance(labels, dict) or not labels:
        raise DataError("'labels' missing or not a mapping", json_path)
    by_index: dict[int, str] = {}
    for k, v in labels.items():
        if str(k).strip().lstrip("-").isdigit():
            by_index[int(k)] = str(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            by_index[v] = str(k)
        else:
            raise DataError(f"unsupported label entry {k!r}: {v!r} (region-based labels are not supported)", json_path)
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"label indices {sorted(by_index)} are not contiguous from 0", json_path)
    return [by_index[i] for i in range(len(by_index))]


def read_msd(root: str | Path, classes: Sequence[str] | int | None = None) -> SegDataset:
    """Medical Segmentation Decathlon or nnU-Net v2 raw folder with ``dataset.json``.

    MSD: cases from the ``training`` list (4D images hold channels). nnU-Net v2: channel files
    ``imagesTr/<case>_0000<ext>`` ... with ``labelsTr/<case><ext>``. ``imagesTs`` becomes the
    unlabeled split "test_unlabeled"; ``splits/<name>.txt`` files are read as predefined splits.
    """
    root = Path(root)
    json_path = root / "dataset.json"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read dataset.json ({exc})", json_path) from exc
    problems: list[DataProblem] = []
    names = resolve_classes(classes, []) if classes is not None else _msd_classes(meta.get("labels"), json_path)
    channel_names = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    n_channels = len(channel_names)
    ext = meta.get("file_ending", ".nii.gz")
    entries: list[CaseEntry] = []
    seen: set[str] = set()

    training = meta.get("training")
    if isinstance(training, list) and training:
        for item in training:
            img_rel, lbl_rel = item.get("image"), item.get("label")
            if not img_rel:
                problems.append(DataProblem(str(json_path), f"training entry without 'image': {item}"))
                continue
            img = root / img_rel
            cid = strip_ext(img)
            if img.is_file():
                images = [img]
            else:
                # nnU-Net v1 lists ./imagesTr/x.nii.gz while the files are x_0000.nii.gz ...
                images = [img.parent / f"{cid}_{c:04d}{ext}" for c in range(n_channels)]
                if not all(p.is_file() for p in images):
                    problems.append(DataProblem(str(img), "image listed in dataset.json 'training' does not exist"))
                    continue
            lbl = root / lbl_rel if lbl_rel else None
            if lbl is not None and not lbl.is_file():
                problems.append(DataProblem(str(lbl), "label listed in dataset.json 'training' does not exist"))
                continue
            entries.append(CaseEntry(cid, images, lbl))
            seen.add(cid)
    else:
        img_dir, lbl_dir = root / "imagesTr", root / "labelsTr"
        suffix = f"_0000{ext}"
        firsts = sorted(img_dir.glob(f"*{suffix}"), key=lambda p: natural_key(p.name)) if img_dir.is_dir() else []
        for first in firsts:
            cid = first.name[: -len(suffix)]
            images = [first] + [img_dir / f"{cid}_{c:04d}{ext}" for c in range(1, n_channels)]
            present = [p for p in images if p.is_file()]
            if len(present) != len(images):
                if len(present) == 1 and ext in (".png", ".bmp", ".tif", ".tiff"):
                    images = present  # nnU-Net natural images: one RGB file carries all channels
                else:
                    for p in images:
                        if not p.is_file():
                            problems.append(DataProblem(str(p), f"channel file of case '{cid}' is missing"))
                    continue
            lbl = lbl_dir / f"{cid}{ext}"
            if not lbl.is_file():
                problems.append(DataProblem(str(first), f"no label {lbl_dir.name}/{cid}{ext} for this training image"))
                continue
            entries.append(CaseEntry(cid, images, lbl))
            seen.add(cid)
        if lbl_dir.is_dir():
            for lbl in sorted(lbl_dir.iterdir()):
                if lbl.name.endswith(ext) and lbl.name[: -len(ext)] not in seen and not lbl.name.startswith("."):
                    problems.append(DataProblem(str(lbl), "label has no matching image in imagesTr"))

    splits = _read_splits_dir(root, problems)
    ts_dir = root / "imagesTs"
    if ts_dir.is_dir():
        ts_entries = _msd_test_entries(ts_dir, ext, n_channels)
        for e in ts_entries:
            if e.case_id in seen:
                problems.append(DataProblem(str(e.image_paths[0]), f"test case id '{e.case_id}' also used in training"))
        entries.extend(e for e in ts_entries if e.case_id not in seen)
        splits["test_unlabeled"] = [e.case_id for e in ts_entries if e.case_id not in seen]

    spatial = _probe_spatial_dims(entries[0].image_paths[0]) if entries else 3
    return SegDataset(str(meta.get("name") or root.name), root, entries, names, spatial, splits, problems)


def _msd_test_entries(ts_dir: Path, ext: str, n_channels: int) -> list[CaseEntry]:
    """Unlabeled cases in imagesTs: nnU-Net channel files or MSD single (4D) files."""
    files = sorted((p for p in ts_dir.iterdir() if p.name.endswith(ext) and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    channel_re = re.compile(rf"^(.*)_(\d{{4}}){re.escape(ext)}$")
    grouped: dict[str, list[Path]] = {}
    for p in files:
        m = channel_re.match(p.name)
        cid = m.group(1) if m else p.name[: -len(ext)]
        grouped.setdefault(cid, []).append(p)
    return [CaseEntry(cid, sorted(ps, key=lambda p: p.name), None, kind="image") for cid, ps in grouped.items()]


_PATIENT_RE = re.compile(r"^(patient\d+)", re.IGNORECASE)


def _patient_of(name: str) -> str:
    """Patient id of an SSL4MIS case or slice name (``patient001_frame01_slice_3`` -> ``patient001``)."""
    m = _PATIENT_RE.match(name)
    if m:
        return m.group(1)
    base = re.split(r"_slice_|_frame", name)[0]
    return base.split("_")[0] if "_" in base else base


def _read_list(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def read_ssl4mis(root: str | Path, classes: Sequence[str] | int | None = None) -> SegDataset:
    """SSL4MIS HDF5 layout (ACDC): 2D training slices plus 3D val/test volumes.

    Cases: every slice of ``train_slices.list`` (kind "slice") and every volume of
    ``train.list``/``val.list``/``test.list`` (kind "volume"). Training volumes are optional
    (SSL4MIS trains on slices, and many copies ship without them), so absent ones are skipped
    silently; absent val/test volumes and slices are problems.
    """
    root = Path(root)
    data = root / "data"
    problems: list[DataProblem] = []
    entries: list[CaseEntry] = []
    splits: dict[str, list[str]] = {}

    slice_ids: list[str] = []
    for name in _read_list(root / "train_slices.list"):
        p = data / "slices" / f"{name}.h5"
        if not p.is_file():
            problems.append(DataProblem(str(p), "slice listed in train_slices.list does not exist"))
            continue
        entries.append(CaseEntry(name, [p], p, _patient_of(name), kind="slice"))
        slice_ids.append(name)
    splits["train"] = slice_ids

    for list_name, split in (("train.list", "train_volumes"), ("val.list", "val"), ("test.list", "test")):
        ids: list[str] = []
        for name in _read_list(root / list_name):
            p = data / f"{name}.h5"
            if not p.is_file():
                if split != "train_volumes":
                    problems.append(DataProblem(str(p), f"volume listed in {list_name} does not exist"))
                continue
            entries.append(CaseEntry(name, [p], p, _patient_of(name), kind="volume"))
            ids.append(name)
        if ids or split != "train_volumes":
            splits[split] = ids

    if classes is not None:
        names = resolve_classes(classes, BINARY_CLASSES)
    elif "ACDC" in root.resolve().name.upper():
        names = list(ACDC_CLASSES)
    else:
        names = resolve_classes(_infer_class_count(root, entries, splits), BINARY_CLASSES)
    return SegDataset(root.name, root, entries, names, 2, splits, problems)


def _infer_class_count(root: Path, entries: list[CaseEntry], splits: dict[str, list[str]]) -> int:
    """Max label over the val volumes (or first slices) + 1; costs one read per volume."""
    import h5py

    by_id = {e.case_id: e for e in entries}
    ids = splits.get("val") or splits.get("test") or splits.get("train", [])[:50]
    top = 1
    for cid in ids:
        try:
            with h5py.File(by_id[cid].image_paths[0], "r") as f:
                top = max(top, int(np.max(f["label"][()])))
        except Exception:
            continue  # broken files are reported by check_dataset
    return top + 1


def h5_lists_folder(root: Path) -> Path | None:
    """Folder holding the ``*.list`` files of an HDF5 volume set: ``root`` or ``root/data`` (UA-MT)."""
    for folder in (root, root / "data"):
        if folder.is_dir() and any(folder.glob("*.list")):
            return folder
    return None


def h5_volume_file(folder: Path, case_id: str) -> Path | None:
    """The HDF5 file of volume ``case_id``: ``<folder>/<id>/*.h5`` or ``<folder>/<any>/<id>/*.h5``
    (``mri_norm2.h5`` preferred when a case folder holds several)."""
    for case_dir in [folder / case_id, *sorted(folder.glob(f"*/{glob_escape(case_id)}"))]:
        if case_dir.is_dir():
            files = sorted(p for p in case_dir.iterdir() if file_ext(p) in HDF5_EXTENSIONS and p.is_file())
            if files:
                return next((p for p in files if p.name == "mri_norm2.h5"), files[0])
    return None


def glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped (case ids are literal names)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_h5_volumes(root: str | Path, classes: Sequence[str] | int | None = None) -> SegDataset:
    """3D volumes in HDF5 (LA / UA-MT layout): ``<root>/<ID>/mri_norm2.h5`` with ``image`` and
    ``label`` datasets, and ``train.list`` / ``test.list`` (any ``<split>.list``) naming the IDs.

    The lists may sit in ``root`` or ``root/data`` and the case folders beside them or one level
    down (``data/2018LA_Seg_Training Set/<ID>/``). Each list is a split; listed IDs without a
    file are problems.
    """
    root = Path(root)
    folder = h5_lists_folder(root)
    if folder is None:
        raise DataError("no *.list files (train.list, test.list) naming the volumes", root)
    problems: list[DataProblem] = []
    entries: list[CaseEntry] = []
    splits: dict[str, list[str]] = {}
    for list_path in sorted(folder.glob("*.list")):
        ids: list[str] = []
        for name in _read_list(list_path):
            path = h5_volume_file(folder, name)
            if path is None:
                problems.append(DataProblem(str(folder / name), f"volume listed in {list_path.name} has no "
                                                                 f"folder {name}/ with an .h5 file"))
                continue
            entries.append(CaseEntry(name, [path], path, kind="volume"))
            ids.append(name)
        splits[list_path.stem] = ids
    if classes is not None:
        names = resolve_classes(classes, BINARY_CLASSES)
    else:  # a few volumes are enough to see the label values; each read costs a whole volume
        few = (splits.get("test") or splits.get("val") or [e.case_id for e in entries])[:5]
        count = _infer_class_count(folder, entries, {"val": few})
        names = list(BINARY_CLASSES) if count == 2 else resolve_classes(count, BINARY_CLASSES)
    spatial = _probe_spatial_dims(entries[0].image_paths[0]) if entries else 3
    return SegDataset(root.name, root, entries, names, spatial, splits, problems)


#: Options every reader accepts, applied to the dataset rather than to the indexing.
GENERIC_OPTIONS: tuple[str, ...] = ("mask_threshold",)


def open_with_reader(reader: Callable[..., SegDataset], path: Path, classes: Sequence[str] | int | None,
                     options: dict[str, Any], what: str, where: Path | None = None,
                     extra_keys: Sequence[str] = ()) -> SegDataset:
    """Call ``reader(path, classes=..., **options)`` after checking the option names.

    An unknown option is a DataError naming it, the closest valid name and every valid one
    (``extra_keys``: further keys valid where the options come from, e.g. a YAML's ``format``).
    ``mask_threshold`` (1..255) is set on the dataset: raster masks are binarised at it.
    """
    options = dict(options)
    params = list(inspect.signature(reader).parameters)[1:]
    valid = sorted({*params, *GENERIC_OPTIONS, *extra_keys} - {"classes"})
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise DataError(f"unknown option '{key}' for a {what} dataset{hint} (valid options: "
                            f"{', '.join(valid)})", where or path)
    threshold = options.get("mask_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 < threshold <= 255 or threshold != int(threshold)):
        raise DataError(f"mask_threshold must be an integer grey value in 1..255, got {threshold!r}", where or path)
    if "mask_threshold" not in params:  # the reader does not take it (a dataset YAML does): set it here
        options.pop("mask_threshold", None)
    ds = reader(path, classes=classes, **options)
    if threshold is not None:
        ds.mask_threshold = int(threshold)
    return ds


def read_dataset_yaml(path: str | Path, classes: Sequence[str] | int | None = None,
                      mask_threshold: int | None = None) -> SegDataset:
    """Dataset described by YAML: ``format`` (folder|paired|csv|msd|ssl4mis|h5volumes|unlabeled),
    ``root`` (relative to the YAML's folder; for csv the CSV file), optional ``name``,
    ``classes``, ``mask_threshold`` and reader options (e.g. ``images_dir``, ``mask_pattern``).
    A ``mask_threshold`` argument (``data.mask_threshold``) wins over the YAML's."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read dataset YAML ({exc})", path) from exc
    if not isinstance(spec, dict):
        raise DataError("expected a mapping with 'format' and 'root'", path)
    spec = dict(spec)
    fmt = str(spec.pop("format", "")).lower()
    readers: dict[str, Callable[..., SegDataset]] = {
        "folder": read_folder,
        "paired": read_paired_folder,
        "csv": read_csv_list,
        "msd": read_msd,
        "nnunet": read_msd,
        "ssl4mis": read_ssl4mis,
        "h5volumes": read_h5_volumes,
        "unlabeled": read_unlabeled_folder,
    }
    if fmt not in readers:
        raise DataError(f"unknown or missing format '{fmt}'; expected one of {sorted(readers)}", path)
    root = path.parent / str(spec.pop("root", "."))
    name = spec.pop("name", None)
    yaml_classes = spec.pop("classes", None)
    if mask_threshold is not None:
        spec["mask_threshold"] = mask_threshold
    cls = classes if classes is not None else yaml_classes
    ds = open_with_reader(readers[fmt], root, cls, spec, f"'{fmt}'", where=path,
                          extra_keys=("format", "root", "name", "classes"))
    if name:
        ds.name = str(name)
    return ds


FolderDataset = read_folder
