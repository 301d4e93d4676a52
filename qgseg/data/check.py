"""Load every case of a dataset and report all problems plus a short summary."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qgseg.data.case import Case
from qgseg.data.datasets import DataProblem, SegDataset
from qgseg.data.io import (
    RASTER_EXTENSIONS,
    TIFF_EXTENSIONS,
    DataError,
    file_ext,
    read_image,
)


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: every problem found, and dataset statistics."""

    name: str
    problems: list[DataProblem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def format(self) -> str:
        """Readable multi-line report: problems one per line, then the summary table."""
        lines: list[str] = []
        if self.problems:
            lines.append(f"Dataset '{self.name}': {len(self.problems)} problem(s)")
            lines.extend(f"  {p}" for p in self.problems)
            lines.append("")
        else:
            lines.append(f"Dataset '{self.name}': OK")
        lines.extend(f"  note: {n}" for n in self.notes)
        s = self.summary
        rows: list[tuple[str, str]] = [
            ("cases", f"{s.get('case_count', 0)} ({s.get('labeled_count', 0)} labeled, "
                      f"{s.get('checked_count', 0)} checked)"),
            ("classes", ", ".join(f"{i}={c}" for i, c in enumerate(s.get("classes", [])))),
            ("channels", ", ".join(str(c) for c in sorted(s.get("channels", set()))) or "-"),
        ]
        for dims, info in sorted(s.get("spatial_sizes", {}).items()):
            rows.append((f"{dims}D sizes", f"min {info['min']}, max {info['max']}, {info['distinct']} distinct"))
        spacing = s.get("spacing")
        if isinstance(spacing, dict):
            rows.append(("spacing (mm)", f"min {spacing['min']}, max {spacing['max']}"))
        else:
            rows.append(("spacing", str(spacing)))
        fg = s.get("foreground_fraction", {})
        if fg:
            rows.append(("foreground", ", ".join(f"{k} {v:.3%}" for k, v in fg.items())))
        if s.get("groups"):
            rows.append(("groups", str(s["groups"])))
        if s.get("splits"):
            rows.append(("splits", ", ".join(f"{k} {v}" for k, v in s["splits"].items())))
        width = max(len(k) for k, _ in rows)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in rows)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _round(values: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


def channel_outliers(channels: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Majority channel count of ``{name: channels}`` and the names (-> count) that differ from it.

    Ties go to the larger count, so one grey image beside one RGB image is the odd one.
    """
    counts = Counter(channels.values())
    majority = max(counts, key=lambda c: (counts[c], c))
    return majority, {k: c for k, c in channels.items() if c != majority}


def harmonise_channels(cases: Sequence[Case], channels: int | None = None) -> tuple[int, list[str]]:
    """Give every case the same channel count, in place: the majority's (or ``channels``).

    Grey images among RGB ones are repeated to 3 channels; any other mismatch (4-channel among
    grey, 4D NIfTI among 3D...) is a DataError naming the file. Returns ``(channels, files of
    the converted cases)`` so the caller can warn once.
    """
    if not cases:
        return channels or 0, []
    by_file = {c.source: c.channels for c in cases}
    target = channels if channels is not None else channel_outliers(by_file)[0]
    converted: list[str] = []
    for case in cases:
        if case.channels == target:
            continue
        if case.channels == 1 and target == 3:
            case.image = np.repeat(case.image, 3, axis=0)
            converted.append(case.source)
            continue
        n_same = sum(1 for c in by_file.values() if c == target)
        raise DataError(f"image has {case.channels} channel(s) but {n_same} other case(s) have {target}; "
                        "only grey among RGB is converted (repeated); convert or remove this file",
                        case.source)
    return target, converted


def channel_warning(files: Sequence[str], channels: int) -> str:
    """The one warning naming the grey images that :func:`harmonise_channels` repeated to RGB."""
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    return f"warning: {len(files)} grey image(s) among {channels}-channel ones repeated to {channels} channels: {shown}"


def harmonise_run_cases(train: Sequence[Case], val: Sequence[Case], say: Callable[[str], None] = print) -> int:
    """:func:`harmonise_channels` for a run's training and validation cases (the majority of the
    training cases decides), with the one warning through ``say``; returns the channel count."""
    channels, converted = harmonise_channels(train)
    converted += harmonise_channels(val, channels)[1]
    if converted:
        say(channel_warning(converted, channels))
    return channels


def swapped_folders(ds: SegDataset, probe: int = 3) -> str | None:
    """One message when the first labeled raster pairs look swapped: every probed "image" is a
    single-channel two-level (binary) picture and every "mask" an RGB picture with many values."""
    looked = 0
    for case_id in ds.labeled_ids[:probe]:
        entry = ds.entry(case_id)
        image_path, mask_path = entry.image_paths[0], entry.mask_path
        if any(file_ext(p) not in RASTER_EXTENSIONS + TIFF_EXTENSIONS for p in (image_path, mask_path)):
            return None
        try:
            image, _ = read_image(image_path)
            mask, _ = read_image(mask_path)
        except DataError:
            return None  # broken files are reported per file by check_dataset
        if not (image.shape[0] == 1 and np.unique(image).size <= 2 and mask.shape[0] == 3
                and np.unique(mask).size > 16):
            return None
        looked += 1
    if not looked:
        return None
    entry = ds.entry(ds.labeled_ids[0])
    return (f"images and masks look swapped: the first {looked} 'image(s)' (e.g. {entry.image_paths[0]}) are "
            f"binary single-channel pictures and their 'masks' (e.g. {entry.mask_path}) are colour photos; "
            "swap the folders (or images_dir/masks_dir in a dataset YAML)")


def check_dataset(ds: SegDataset, max_cases: int | None = None, progress: bool = False) -> CheckReport:
    """Load every case (or the first ``max_cases``) and collect all problems without stopping.

    Problems: indexing problems of ``ds``, an empty dataset, and each case's DataError
    (unreadable or truncated file, shape mismatch, unexpected label values, NaN/Inf).
    """
    problems: list[DataProblem] = list(ds.problems)
    swapped = swapped_folders(ds)
    if swapped:  # one line, not one "unexpected label values" line per file
        problems.append(DataProblem(str(ds.root), swapped))
        return CheckReport(ds.name, problems, {"case_count": len(ds), "classes": list(ds.classes)}, list(ds.notes))
    if len(ds) == 0:
        problems.append(DataProblem(str(ds.root), "dataset is empty: no cases found"))
    ids = ds.ids if max_cases is None else ds.ids[:max_cases]
    iterator: Any = ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(ids, desc=f"checking {ds.name}", unit="case")

    sizes: dict[int, list[tuple[int, ...]]] = {}
    channels: set[int] = set()
    channels_of: dict[str, int] = {}
    spacings: list[tuple[float, ...]] = []
    fg_sums = np.zeros(ds.num_classes, dtype=np.float64)
    labeled_checked = 0
    checked = 0
    for case_id in iterator:
        try:
            case = ds.load(case_id)
        except DataError as exc:
            problems.append(DataProblem(exc.path or case_id, exc.problem))
            continue
        except Exception as exc:  # a reader bug must not hide the remaining cases' problems
            problems.append(DataProblem(case_id, f"unexpected error while loading: {type(exc).__name__}: {exc}"))
            continue
        checked += 1
        sizes.setdefault(case.spatial_dims, []).append(case.spatial_shape)
        channels.add(case.channels)
        channels_of[case.source] = case.channels
        if case.spacing is not None:
            spacings.append(tuple(case.spacing))
        if case.label is not None:
            labeled_checked += 1
            counts = np.bincount(case.label.ravel(), minlength=ds.num_classes)[: ds.num_classes]
            fg_sums += counts / max(case.label.size, 1)

    if len(channels) > 1:
        majority, odd = channel_outliers(channels_of)
        n_major = len(channels_of) - len(odd)
        for path, c in odd.items():
            fix = "training repeats it to RGB" if (c, majority) == (1, 3) else "training refuses it"
            problems.append(DataProblem(path, f"image has {c} channel(s) while {n_major} other case(s) have "
                                              f"{majority}; {fix}"))
    spatial_sizes: dict[int, dict[str, Any]] = {}
    for dims, shapes in sizes.items():
        arr = np.asarray(shapes)
        spatial_sizes[dims] = {
            "min": tuple(int(v) for v in arr.min(axis=0)),
            "max": tuple(int(v) for v in arr.max(axis=0)),
            "distinct": len(set(shapes)),
        }
    spacing: Any = "none (pixels)"
    by_len: dict[int, list[tuple[float, ...]]] = {}
    for sp in spacings:
        by_len.setdefault(len(sp), []).append(sp)
    if by_len:
        common = max(by_len.values(), key=len)  # mixed 2D/3D spacings: report the majority kind
        arr = np.asarray(common)
        spacing = {"min": _round(arr.min(axis=0)), "max": _round(arr.max(axis=0))}
    group_values = {g for g in ds.groups.values() if g is not None}
    summary: dict[str, Any] = {
        "case_count": len(ds),
        "checked_count": checked,
        "labeled_count": sum(ds.has_labels(i) for i in ds.ids),
        "spatial_sizes": spatial_sizes,
        "channels": channels,
        "classes": list(ds.classes),
        "foreground_fraction": (
            {ds.classes[c]: float(fg_sums[c] / labeled_checked) for c in range(1, ds.num_classes)}
            if labeled_checked
            else {}
        ),
        "spacing": spacing,
        "groups": len(group_values),
        "splits": {k: len(v) for k, v in ds.splits.items()},
    }
    return CheckReport(ds.name, problems, summary, list(ds.notes))
