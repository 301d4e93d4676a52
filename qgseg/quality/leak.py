"""Refuse a quality predictor that learnt from cases a guided run must not have seen labeled.

A quality predictor is trained on a run's labeled cases (with their truth masks). Used to
guide another run of the same dataset whose unlabeled, validation or test cases include
any of those, it brings their labels in through the back door: e.g. a predictor trained
with ACDC ``data.labeled=7`` guiding a ``data.labeled=3`` run, where patients 4-7 are
unlabeled. The checkpoint records ``labeled_ids``, ``labeled_groups`` and ``dataset_root``
(:meth:`~qgseg.quality.training.QualityTrainer.checkpoint_meta`); :func:`check_predictor_leak`
compares them with the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.datasets import SegDataset
from ..data.io import DataError
from ..data.run_data import RunData, group_of

__all__ = ["check_predictor_leak"]

_SHOW = 5
ALLOW_KEY = "guidance.allow_unverified_predictor=true"


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def _same_dataset(meta: dict[str, Any], ds: SegDataset) -> bool:
    """Same dataset folder (resolved ``dataset_root``), or the same name when the root is not
    recorded. A checkpoint that records neither cannot be told apart: treated as the same."""
    root = meta.get("dataset_root")
    if root:
        return _resolved(root) == _resolved(ds.root)
    name = meta.get("dataset")
    return name is None or str(name) == ds.name


def _roles(run: RunData) -> list[tuple[str, SegDataset, list[str]]]:
    roles = [("unlabeled", run.dataset, list(run.unlabeled)), ("val", run.dataset, list(run.val)),
             ("test", run.dataset, list(run.test))]
    if run.unlabeled_dataset is not None:
        extra = run.unlabeled_dataset
        roles.append((f"unlabeled (extra dataset {extra.root})", extra, list(extra.ids)))
    return roles


def check_predictor_leak(meta: dict[str, Any], run_data: RunData, source: str | Path, *,
                         allow_unverified: bool = False) -> None:
    """Raise :class:`DataError` if the predictor ``source`` (checkpoint ``meta``) was trained on
    a case that ``run_data`` uses as unlabeled, validation or test (by case id or group).

    Compared only when the predictor's dataset is the run's dataset or its extra unlabeled
    dataset (same resolved ``dataset_root``; same ``dataset`` name when the root is not
    recorded); for another dataset it does nothing. A checkpoint that does not record its
    training cases (``labeled_ids``; older checkpoints) is refused, unless ``allow_unverified``
    (``guidance.allow_unverified_predictor=true``), which prints a warning instead.
    """
    datasets = [run_data.dataset] + ([run_data.unlabeled_dataset] if run_data.unlabeled_dataset is not None else [])
    if not any(_same_dataset(meta, ds) for ds in datasets):
        return
    if meta.get("labeled_ids") is None:
        message = (f"the quality predictor {source} does not record its training cases (no 'labeled_ids' in "
                   f"its checkpoint; trained before they were recorded) and may have been trained on dataset "
                   f"'{meta.get('dataset', '?')}', the dataset of this run, so it cannot be checked against "
                   f"this run's unlabeled, validation and test cases.")
        if allow_unverified:
            print(f"WARNING: {message} Used anyway ({ALLOW_KEY}): results may be optimistic.")
            return
        message += f" Retrain it on this run's labeled cases, or set {ALLOW_KEY} to use it anyway."
        raise DataError(message)

    seen_ids = {str(i) for i in meta["labeled_ids"]}
    seen_groups = {str(g) for g in meta.get("labeled_groups") or []}
    problems = []
    for role, ds, ids in _roles(run_data):
        # ids with ids and groups with groups: CVC-ColonDB's frame '9' is not its sequence '9'
        hit_ids = sorted(i for i in ids if i in seen_ids)
        hit_groups = sorted({group_of(ds, i) for i in ids} & seen_groups)
        if hit_ids or hit_groups:
            problems.append(f"{role}: {len(hit_ids)} case(s) among its training cases {hit_ids[:_SHOW]}, "
                            f"{len(hit_groups)} group(s) among its training groups {hit_groups[:_SHOW]}")
    if problems:
        raise DataError(
            f"the quality predictor {source} was trained on {len(seen_ids)} labeled case(s) of dataset "
            f"'{meta.get('dataset', '?')}' that this run does not have labeled: " + "; ".join(problems)
            + ". Its scores would bring in their labels (a leak). Train the predictor on this run's labeled "
              "cases only (the same data.dataset, data.labeled and splits as this run).")
