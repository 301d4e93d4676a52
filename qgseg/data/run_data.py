"""Resolve a run's data config into concrete case ids per role (labeled, unlabeled, val, test)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from .datasets import SegDataset
from .detect import open_dataset
from .io import DataError
from .splits import first_groups, split_by_groups

DEFAULT_SPLIT_SIZES = {"train": 0.7, "val": 0.1, "test": 0.2}
# `data.dataset: demo`: few labeled images, three times as many unlabeled ones; 40 labeled
# images give the quality predictor enough variety to learn to look at the image.
DEMO_DATA = {"seed": 0, "n_labeled": 40, "n_unlabeled": 120, "n_val": 10, "n_test": 20}


@dataclass
class RunData:
    """A dataset and the ids it plays in a run. ``unlabeled`` may come from a second dataset."""

    dataset: SegDataset
    labeled: list[str]
    val: list[str]
    test: list[str]
    unlabeled: list[str] = field(default_factory=list)
    unlabeled_dataset: SegDataset | None = None

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def describe(self) -> str:
        return (f"{self.dataset.name}: {len(self.labeled)} labeled, {len(self.unlabeled)} unlabeled, "
                f"{len(self.val)} val, {len(self.test)} test cases; classes {self.classes}")


def resolve_dataset_path(cfg: DataConfig, output_dir: str | Path = "runs") -> Path | str:
    if cfg.dataset == "demo":
        from .demo import make_demo_dataset

        return make_demo_dataset(Path(output_dir) / "_demo_data", **DEMO_DATA)
    path = Path(cfg.dataset)
    if not path.is_absolute() and cfg.root:
        path = Path(cfg.root) / path
    return path


def prepare_run_data(cfg: DataConfig, output_dir: str | Path = "runs") -> RunData:
    """Open the dataset and decide which cases are labeled, unlabeled, validation and test.

    Predefined splits in the data win (PH2 ``splits/``, ACDC ``*.list``); otherwise a
    seeded, group-aware split by ``split_sizes``. ``labeled`` keeps the first N groups of the
    training split in its stored order (the field's ACDC convention) or a fraction of groups.
    """
    ds = open_dataset(resolve_dataset_path(cfg, output_dir), classes=cfg.classes)
    splits = dict(ds.splits)
    needed = [cfg.train_split, cfg.val_split, cfg.test_split]
    if not all(s in splits for s in needed):
        labeled_ids = [i for i in ds.ids if ds.has_labels(i)]
        splits.update(split_by_groups(labeled_ids, ds.groups, cfg.split_sizes or DEFAULT_SPLIT_SIZES,
                                      seed=cfg.split_seed))
    train = splits[cfg.train_split]
    labeled, unlabeled = train, []
    if cfg.labeled is not None:
        n_groups = len({ds.groups.get(i) or i for i in train})
        n = int(cfg.labeled) if cfg.labeled >= 1 else max(1, math.ceil(cfg.labeled * n_groups))
        labeled = first_groups(train, ds.groups, n)
        chosen = set(labeled)
        unlabeled = [i for i in train if i not in chosen]
    if cfg.unlabeled_split and cfg.unlabeled_split in splits:
        unlabeled += splits[cfg.unlabeled_split]
    extra = None
    if cfg.unlabeled:
        upath = Path(cfg.unlabeled)
        if not upath.is_absolute() and cfg.root:
            upath = Path(cfg.root) / upath
        extra = open_dataset(upath)
    val, test = splits[cfg.val_split], splits[cfg.test_split]
    if cfg.max_cases:
        labeled, val, test = labeled[:cfg.max_cases], val[:cfg.max_cases], test[:cfg.max_cases]
        unlabeled = unlabeled[:cfg.max_cases]
    if not labeled:
        raise DataError(f"{ds.root}: no labeled training cases (split '{cfg.train_split}')")
    run = RunData(ds, labeled, val, test, unlabeled, extra)
    check_no_leak(run)
    return run


def group_of(ds: SegDataset, case_id: str) -> str:
    """A case's group (patient, video sequence); a case without one is its own group."""
    return ds.groups.get(case_id) or case_id


# (evaluated role, roles it must not share a group with)
_LEAK_PAIRS = (("test", ("labeled", "unlabeled", "val")), ("val", ("labeled", "unlabeled")))
_SHOW = 5


def _overlap_text(a: str, b: str, shared: set[str]) -> str:
    return f"{a} and {b} share {len(shared)} group(s) {sorted(shared)[:_SHOW]}"


def check_no_leak(run: RunData) -> None:
    """Raise :class:`DataError` when a patient/sequence leaks between roles.

    Compared by group (``ds.groups[id] or id``), not by case id: ACDC trains on slices
    (``patient001_frame01_slice_3``) and tests on volumes (``patient001_frame01``), whose ids
    never match. Test must not share a group with labeled, unlabeled or val cases; val not
    with labeled or unlabeled. The extra unlabeled dataset (``data.unlabeled``) must not hold
    a case id or group equal to a case id or group of the main dataset's labeled, val or test
    cases.
    """
    ds = run.dataset
    groups = {role: {group_of(ds, i) for i in getattr(run, role)} for role in ("labeled", "unlabeled", "val", "test")}
    found = [_overlap_text(a, b, groups[a] & groups[b]) for a, others in _LEAK_PAIRS for b in others
             if groups[a] & groups[b]]
    extra = run.unlabeled_dataset
    if extra is not None:
        extra_keys = set(extra.ids) | {g for g in extra.groups.values() if g}
        for role in ("labeled", "val", "test"):
            keys = set(getattr(run, role)) | groups[role]
            shared = extra_keys & keys
            if shared:
                found.append(f"the extra unlabeled dataset {extra.root} and {role} share {len(shared)} case id(s)/"
                             f"group(s) {sorted(shared)[:_SHOW]}")
    if found:
        raise DataError("data leak between roles (compared by patient/sequence group): " + "; ".join(found)
                        + ". Each patient or sequence must be in one role only: fix the split lists or groups.",
                        ds.root)
