"""Load every case of a dataset and report all problems plus a short summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qgseg.data.datasets import DataProblem, SegDataset
from qgseg.data.io import DataError


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: every problem found, and dataset statistics."""

    name: str
    problems: list[DataProblem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

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


def check_dataset(ds: SegDataset, max_cases: int | None = None, progress: bool = False) -> CheckReport:
    """Load every case (or the first ``max_cases``) and collect all problems without stopping.

    Problems: indexing problems of ``ds``, an empty dataset, and each case's DataError
    (unreadable or truncated file, shape mismatch, unexpected label values, NaN/Inf).
    """
    problems: list[DataProblem] = list(ds.problems)
    if len(ds) == 0:
        problems.append(DataProblem(str(ds.root), "dataset is empty: no cases found"))
    ids = ds.ids if max_cases is None else ds.ids[:max_cases]
    iterator: Any = ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(ids, desc=f"checking {ds.name}", unit="case")

    sizes: dict[int, list[tuple[int, ...]]] = {}
    channels: set[int] = set()
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
        if case.spacing is not None:
            spacings.append(tuple(case.spacing))
        if case.label is not None:
            labeled_checked += 1
            counts = np.bincount(case.label.ravel(), minlength=ds.num_classes)[: ds.num_classes]
            fg_sums += counts / max(case.label.size, 1)

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
    return CheckReport(ds.name, problems, summary)
