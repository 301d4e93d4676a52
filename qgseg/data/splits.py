"""Group-aware data splits: a patient or video sequence never crosses a split boundary."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from qgseg.data.io import IMAGE_EXTENSIONS, DataError, file_ext, strip_ext


def read_split_file(path: str | Path) -> list[str]:
    """Case ids from a text file, one per line; blank lines and ``#`` comments are skipped.

    Entries written as file names (``IMD003.jpg``) are reduced to their stem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read split file ({exc.strerror or exc})", path) from exc
    ids: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        ids.append(strip_ext(line) if file_ext(line) in IMAGE_EXTENSIONS else line)
    return ids


def _group_of(case_id: str, groups: Mapping[str, str | None]) -> str:
    """Group key; ids without a group form their own singleton group."""
    g = groups.get(case_id)
    return f"\x00{case_id}" if g is None else str(g)


def _groups_in_order(ids: Sequence[str], groups: Mapping[str, str | None]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in ids:
        out.setdefault(_group_of(i, groups), []).append(i)
    return out


def split_by_groups(
    ids: Sequence[str],
    groups: Mapping[str, str | None],
    sizes: Mapping[str, float | int],
    seed: int,
) -> dict[str, list[str]]:
    """Split ``ids`` so that no group crosses splits; deterministic given ``seed``.

    ``sizes`` are either all fractions (floats, sum <= 1: approximate share of *cases*, filled
    group by group) or all ints (number of *groups* per split). Ids left over when sizes sum
    below the total are not returned. Split lists keep the order of ``ids``.
    """
    if not sizes:
        raise ValueError("sizes is empty")
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ids contain duplicates")
    by_group = _groups_in_order(ids, groups)
    keys = list(by_group)
    rng = np.random.default_rng(seed)
    order = [keys[k] for k in rng.permutation(len(keys))]
    values = list(sizes.values())
    assigned: dict[str, list[str]] = {name: [] for name in sizes}  # group keys per split

    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        if any(v < 0 for v in values) or sum(values) > len(order):
            raise ValueError(f"group counts {dict(sizes)} exceed the {len(order)} groups available")
        pos = 0
        for name, n in sizes.items():
            assigned[name] = order[pos : pos + int(n)]
            pos += int(n)
    elif all(isinstance(v, (float, np.floating)) for v in values):
        if any(v < 0 for v in values) or sum(values) > 1 + 1e-6:
            raise ValueError(f"fractions {dict(sizes)} must be >= 0 and sum to at most 1")
        total = len(ids)
        target = {name: float(f) * total for name, f in sizes.items()}
        count = {name: 0 for name in sizes}
        fills_all = sum(values) >= 1 - 1e-6
        for g in order:
            size = len(by_group[g])
            # the split furthest below its target takes the group
            name = max(sizes, key=lambda s: target[s] - count[s])
            deficit = target[name] - count[name]
            # with fractions summing below 1, keep a group out rather than overshoot a split
            if not fills_all and deficit < size / 2:
                continue
            assigned[name].append(g)
            count[name] += size
        # a split asked for a share should not end up empty when another has groups to spare
        for name in sizes:
            if target[name] > 0 and not assigned[name]:
                donor = max(sizes, key=lambda s: len(assigned[s]))
                if len(assigned[donor]) > 1:
                    smallest = min(assigned[donor], key=lambda g: len(by_group[g]))
                    assigned[donor].remove(smallest)
                    assigned[name].append(smallest)
    else:
        raise ValueError(f"sizes must be all fractions (float) or all group counts (int), got {dict(sizes)}")

    out: dict[str, list[str]] = {}
    for name, gs in assigned.items():
        members = set(gs)
        out[name] = [i for i in ids if _group_of(i, groups) in members]
    return out


def first_groups(ids_in_order: Sequence[str], groups: Mapping[str, str | None], n: int) -> list[str]:
    """Ids of the first ``n`` distinct groups in order of first appearance.

    This is the SSL4MIS "N labeled patients" protocol: with ACDC ``train_slices.list`` order,
    n=3 gives 68 slices and n=7 gives 136.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    by_group = _groups_in_order(ids_in_order, groups)
    if n > len(by_group):
        raise ValueError(f"asked for the first {n} groups but only {len(by_group)} exist")
    chosen = set(list(by_group)[:n])
    return [i for i in ids_in_order if _group_of(i, groups) in chosen]
