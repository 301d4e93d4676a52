"""Resolve a run's data config into concrete case ids per role (labeled, unlabeled, val, test)."""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, DataConfig
from .datasets import DataProblem, SegDataset
from .detect import open_dataset
from .io import DataError
from .splits import first_groups, read_split_file, split_by_groups

ROLES = ("train", "val", "test")
DEFAULT_SPLIT_SIZES = {"train": 0.7, "val": 0.1, "test": 0.2}
# `data.dataset: demo`: few labeled images, three times as many unlabeled ones; 40 labeled
# images give the quality predictor enough variety to learn to look at the image.
DEMO_DATA = {"seed": 0, "n_labeled": 40, "n_unlabeled": 120, "n_val": 10, "n_test": 20}


@dataclass
class RunData:
    """A dataset and the ids it plays in a run. ``unlabeled`` may come from a second dataset.

    ``split_sources`` says for each role ("train", "val", "test") whether its split came from the
    data ("data"), was drawn by this run ("drawn") or could not be formed ("none", val only);
    ``split_names`` are the split names the roles were read from, ``split_seed`` the seed of the
    drawn ones, ``skipped`` the problems left out with ``data.skip_bad`` and ``source`` the
    dataset path as resolved.
    """

    dataset: SegDataset
    labeled: list[str]
    val: list[str]
    test: list[str]
    unlabeled: list[str] = field(default_factory=list)
    unlabeled_dataset: SegDataset | None = None
    # the extra dataset's ids in the pool (``data.unlabeled_limit``); None: all of them
    extra_ids: list[str] | None = None
    split_sources: dict[str, str] = field(default_factory=dict)
    split_seed: int | None = None
    split_names: dict[str, str] = field(default_factory=lambda: {r: r for r in ROLES})
    split_notes: dict[str, str] = field(default_factory=dict)
    skipped: list[DataProblem] = field(default_factory=list)
    source: str | None = None

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def extra_unlabeled_ids(self) -> list[str]:
        """The extra unlabeled dataset's ids this run uses (all unless ``data.unlabeled_limit`` chose some)."""
        if self.unlabeled_dataset is None:
            return []
        return list(self.unlabeled_dataset.ids) if self.extra_ids is None else list(self.extra_ids)

    def describe(self) -> str:
        extra = self.unlabeled_dataset
        pool = ""
        if extra is not None:
            used = len(self.extra_unlabeled_ids)
            pool = f" (+ {used}{'' if used == len(extra) else f' of {len(extra)}'} in {extra.name})"
        return (f"{self.dataset.name}: {len(self.labeled)} labeled, {len(self.unlabeled)} unlabeled{pool}, "
                f"{len(self.val)} val, {len(self.test)} test cases; classes {self.classes}")


def resolve_dataset_path(cfg: DataConfig, output_dir: str | Path = "runs") -> Path | str:
    if cfg.dataset == "demo":
        from .demo import make_demo_dataset

        return make_demo_dataset(Path(output_dir) / "_demo_data", **DEMO_DATA)
    path = Path(cfg.dataset)
    if not path.is_absolute() and cfg.root:
        path = Path(cfg.root) / path
    return path


SKIP_BAD_HINT = "rerun with --skip-bad (or --set data.skip_bad=true) to leave them out"


def require_clean(ds_or_problems: SegDataset | Sequence[DataProblem | str], skip_bad: bool,
                  what: str) -> list[DataProblem]:
    """Refuse data with cases that could not be indexed, or list them when ``skip_bad``.

    ``ds_or_problems`` is a dataset (its ``problems``: missing files listed in a CSV, image
    without mask, ambiguous stems, split ids not in the data...) or a list of problems
    (``DataProblem`` or plain strings). ``what`` names the data in messages (a path or
    "dataset X"). Without problems returns ``[]``. Otherwise, unless ``skip_bad``, raises one
    :class:`DataError` listing every problem (count first, one per line) and ending with
    :data:`SKIP_BAD_HINT`; with ``skip_bad`` prints the count and every problem to stderr and
    returns them (as ``DataProblem``) so the caller can record them.
    """
    raw = ds_or_problems.problems if isinstance(ds_or_problems, SegDataset) else ds_or_problems
    problems = [p if isinstance(p, DataProblem) else DataProblem("", str(p)) for p in raw]
    if not problems:
        return []
    lines = "\n".join(f"  {_problem_text(p)}" for p in problems)
    if not skip_bad:
        raise DataError(f"{len(problems)} case(s)/file(s) cannot be used:\n{lines}\n{SKIP_BAD_HINT}", what)
    print(f"warning: {what}: skipping {len(problems)} case(s)/file(s) that cannot be used (--skip-bad):\n{lines}",
          file=sys.stderr)
    return problems


def _problem_text(p: DataProblem) -> str:
    return str(p) if p.path else p.message


def _role_text(role: str, name: str, n: int) -> str:
    return f"{role} {n}" if role == name else f"{role} '{name}' {n}"


def _draw_sizes(cfg: DataConfig, names: dict[str, str], missing: list[str]) -> dict[str, float | int]:
    """Sizes of the missing roles from ``split_sizes`` (keyed by split name or role).

    With every role missing the sizes are used as given (fractions summing below 1 leave cases
    out); otherwise the missing roles share all remaining cases in the ratio of their fractions.
    Group counts (ints) are used as given.
    """
    sizes = cfg.split_sizes or DEFAULT_SPLIT_SIZES
    out = {r: sizes.get(names[r], sizes.get(r, 0.0)) for r in missing}
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in out.values())
    if ints or len(missing) == len(ROLES):
        return out
    total = sum(float(v) for v in out.values())
    return {r: float(v) / total if total > 0 else 0.0 for r, v in out.items()}


def resolve_splits(ds: SegDataset, cfg: DataConfig) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """The train/val/test ids of a run: every split the data gives, the missing ones drawn.

    A split "given by the data" is a non-empty split of ``ds.splits`` (``splits/*.txt``, a CSV
    ``split`` column, SSL4MIS lists, MSD ``splits/``). Missing roles are drawn, group-aware and
    seeded by ``data.split_seed``, from the *remaining* labeled cases: those in no split of the
    data whose group (patient, sequence) is in no such split either; remaining cases of a group
    that a given split holds are left out (never moved into another split) and reported. Sizes:
    see :func:`_draw_sizes`. Prints one line saying which splits came from the data and which
    were drawn. Raises :class:`DataError` when a missing train or test split cannot be formed;
    a missing val split that cannot be formed stays empty with a note in the returned notes
    (:func:`require_validation` refuses it unless selection is switched off).

    Returns ``(ids per role, source per role, notes per role)``.
    """
    names = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}
    given = {k: list(v) for k, v in ds.splits.items() if v}
    missing = [r for r in ROLES if names[r] not in given]
    ids = {r: given[names[r]] for r in ROLES if r not in missing}
    sources = {r: "data" for r in ids}
    notes: dict[str, str] = {}
    parts = [", ".join(_role_text(r, names[r], len(ids[r])) for r in ROLES if r in ids) + " from the data"] \
        if ids else []
    if missing:
        taken = {i for v in given.values() for i in v}
        taken_groups = {group_of(ds, i) for i in taken}
        rest = [i for i in ds.ids if ds.has_labels(i) and i not in taken]
        pool = [i for i in rest if group_of(ds, i) not in taken_groups]
        left_out = [i for i in rest if group_of(ds, i) in taken_groups]
        try:
            drawn = split_by_groups(pool, ds.groups, _draw_sizes(cfg, names, missing), seed=cfg.split_seed) \
                if pool else {r: [] for r in missing}
        except ValueError as exc:
            raise ConfigError(f"data.split_sizes: {exc}") from None
        n_groups = len({group_of(ds, i) for i in pool})
        for r in missing:
            ids[r], sources[r] = drawn[r], "drawn"
            if drawn[r]:
                continue
            why = (f"no labeled case is left outside the splits the data gives ({', '.join(sorted(given))})"
                   if not pool else f"the {len(pool)} remaining case(s) form only {n_groups} group(s) for "
                                    f"{len(missing)} split(s)")
            if r == "val":
                sources[r], notes[r] = "none", why
                continue
            raise DataError(f"cannot form the {r} split '{names[r]}': the data has no such split and {why}. "
                            f"Name an existing split with --set data.{r}_split=NAME (the data has: "
                            f"{', '.join(f'{k} {len(v)}' for k, v in ds.splits.items()) or 'none'}), or add "
                            f"the split to the data", ds.root)
        whence = f"the {len(pool)} remaining case(s)" if given else f"the {len(pool)} labeled case(s)"
        drawn_text = ", ".join(_role_text(r, names[r], len(ids[r])) for r in missing if sources[r] == "drawn")
        if drawn_text:
            parts.append(f"{drawn_text} drawn from {whence} (seed {cfg.split_seed})")
        if "val" in notes:
            parts.append(f"no {_role_text('val', names['val'], 0)[:-2]} split: {notes['val']}")
        if left_out:
            parts.append(f"{len(left_out)} remaining case(s) left out because their group is in a split the data "
                         f"gives: {', '.join(left_out[:_SHOW])}{' ...' if len(left_out) > _SHOW else ''}")
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:  # why: every DDP rank resolves the splits; one line is enough
        print("splits: " + "; ".join(parts))
    return ids, sources, notes


def apply_split_files(ds: SegDataset, splits_dir: str | Path) -> None:
    """Replace ``ds``'s splits by the ``<split>.txt`` id lists in ``splits_dir`` (``data.splits_dir``).

    Lets a protocol's split live in the repository beside its config rather than in the data
    folder. A relative folder is looked up from the working directory, then from ``configs/``.
    Ids not in the dataset become problems of ``ds`` (refused or listed by :func:`require_clean`).
    """
    from ..config import CONFIG_DIR

    folder = Path(splits_dir)
    if not folder.is_absolute() and not folder.is_dir():
        folder = CONFIG_DIR / folder
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise DataError("data.splits_dir: no such folder or no <split>.txt files in it", folder)
    known = set(ds.ids)
    for f in files:
        ids = read_split_file(f)
        missing = [i for i in ids if i not in known]
        if missing:
            ds.problems.append(DataProblem(str(f), f"{len(missing)} ids not in dataset '{ds.name}': {missing[:10]}"))
        ds.splits[f.stem] = [i for i in ids if i in known]


def prepare_run_data(cfg: DataConfig, output_dir: str | Path = "runs") -> RunData:
    """Open the dataset and decide which cases are labeled, unlabeled, validation and test.

    Splits: see :func:`resolve_splits` (the data's splits are honoured, only missing ones are
    drawn). Cases that could not be indexed refuse the data unless ``data.skip_bad`` (see
    :func:`require_clean`). ``labeled`` keeps the first N groups of the training split in its
    stored order (the field's ACDC convention) or a fraction of groups.
    """
    source = resolve_dataset_path(cfg, output_dir)
    ds = open_dataset(source, classes=cfg.classes, mask_threshold=cfg.mask_threshold)
    if cfg.splits_dir:
        apply_split_files(ds, cfg.splits_dir)
    skipped = require_clean(ds, cfg.skip_bad, str(source))
    splits, sources, notes = resolve_splits(ds, cfg)
    train = splits["train"]
    labeled, unlabeled = train, []
    if cfg.labeled is not None:
        n_groups = len({ds.groups.get(i) or i for i in train})
        n = int(cfg.labeled) if cfg.labeled >= 1 else max(1, math.ceil(cfg.labeled * n_groups))
        labeled = first_groups(train, ds.groups, n)
        chosen = set(labeled)
        unlabeled = [i for i in train if i not in chosen]
    if cfg.unlabeled_split and cfg.unlabeled_split in ds.splits:
        unlabeled += ds.splits[cfg.unlabeled_split]
    extra = None
    if cfg.unlabeled:
        upath = Path(cfg.unlabeled)
        if not upath.is_absolute() and cfg.root:
            upath = Path(cfg.root) / upath
        extra = open_dataset(upath, mask_threshold=cfg.mask_threshold)
        skipped += require_clean(extra, cfg.skip_bad, str(upath))
    val, test = splits["val"], splits["test"]
    if cfg.max_cases:
        labeled, val, test = labeled[:cfg.max_cases], val[:cfg.max_cases], test[:cfg.max_cases]
        unlabeled = unlabeled[:cfg.max_cases]
    if not labeled:
        raise DataError(f"no labeled training cases (split '{cfg.train_split}')", ds.root)
    extra_ids = None
    if cfg.unlabeled_limit is not None:
        unlabeled, extra_ids = limit_unlabeled(unlabeled, list(extra.ids) if extra is not None else [],
                                               cfg.unlabeled_limit, cfg.split_seed)
    names = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}
    run = RunData(ds, labeled, val, test, unlabeled, extra, extra_ids, split_sources=sources,
                  split_seed=cfg.split_seed, split_names=names, split_notes=notes, skipped=skipped,
                  source=str(Path(source).resolve()))
    check_no_leak(run)
    return run


def limit_unlabeled(unlabeled: list[str], extra_ids: list[str], limit: int,
                    seed: int) -> tuple[list[str], list[str] | None]:
    """At most ``limit`` of the pool ``unlabeled + extra_ids``: a random subset drawn with ``seed``,
    in the pool's order. The draw is a prefix of one permutation of the pool, so for one seed a smaller
    limit keeps a subset of a larger one. Returns ``(unlabeled, extra_ids)``; ``extra_ids`` is None
    when the limit keeps the whole pool."""
    import numpy as np

    n = len(unlabeled) + len(extra_ids)
    if limit >= n:
        return unlabeled, None
    keep = set(np.random.default_rng(seed).permutation(n)[:limit].tolist())
    return ([i for k, i in enumerate(unlabeled) if k in keep],
            [i for k, i in enumerate(extra_ids, start=len(unlabeled)) if k in keep])


def require_validation(run: RunData, select: str | None = "best") -> None:
    """Refuse an empty validation split: a "best" checkpoint picked from no cases is meaningless.

    ``select="last"`` (``train.select: last``) accepts it: the last model is kept, nothing is
    selected. ``select=None`` for trainers that always select on validation (quality predictor).
    """
    if run.val:
        return
    name = run.split_names.get("val", "val")
    if select == "last":
        print(f"no validation cases (split '{name}'): train.select is 'last', so the last model is kept "
              f"as best.ckpt without selection")
        return
    why = run.split_notes.get("val") or "the data gives it with no case"
    ds = run.dataset
    others = ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items() if v) or "none"
    hint = f"name a validation split with --set data.val_split=NAME (splits in the data: {others})"
    if select is not None:
        hint += ", or keep the last model without selection with --set train.select=last"
    raise DataError(f"the validation split '{name}' of dataset '{ds.name}' is empty ({why}); refusing to "
                    f"select a checkpoint on no cases: {hint}", ds.root)


def splits_record(run: RunData) -> dict[str, Any]:
    """The run's resolved splits as stored in ``<run>/splits.json`` and in checkpoint meta ``"splits"``."""
    ds = run.dataset
    roles = {"labeled": run.labeled, "unlabeled": run.unlabeled, "val": run.val, "test": run.test}
    return {
        "dataset": run.source, "dataset_name": ds.name, "dataset_root": str(Path(ds.root).resolve()),
        "seed": run.split_seed, "split_names": dict(run.split_names), "sources": dict(run.split_sources),
        **{role: list(ids) for role, ids in roles.items()},
        "groups": {role: sorted({group_of(ds, i) for i in ids}) for role, ids in roles.items()},
        "unlabeled_dataset": None if run.unlabeled_dataset is None else str(Path(run.unlabeled_dataset.root).resolve()),
        "unlabeled_dataset_ids": run.extra_ids,  # None: all of them
        "skipped": [{"path": p.path, "problem": p.message} for p in run.skipped],
    }


def write_splits(run_dir: str | Path, run: RunData) -> Path:
    """Write ``<run_dir>/splits.json`` (see :func:`splits_record`)."""
    path = Path(run_dir) / "splits.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits_record(run), indent=1))
    return path


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
        names = run.split_names
        given = [r if names.get(r, r) == r else f"{r} ('{names[r]}')" for r in ROLES
                 if run.split_sources.get(r) == "data"]
        whence = f" The {', '.join(given)} split(s) came from the data." if given else ""
        raise DataError("data leak between roles (compared by patient/sequence group): " + "; ".join(found)
                        + f".{whence} Each patient or sequence must be in one role only: fix the split lists or "
                          "groups.", ds.root)


# ----------------------------------------------------------------------------- evaluation of a run's checkpoint
#: roles a checkpoint was trained or selected on: a segmenter learns from labeled and unlabeled
#: cases and is selected on val; a quality predictor learns from labeled ones, selected on val
SEEN_BY_SEGMENTER = ("labeled", "unlabeled", "val")
SEEN_BY_PREDICTOR = ("labeled", "val")
_STORED_ROLES = ("labeled", "unlabeled", "val", "test")


def _matches_run(record: dict[str, Any], path: str | Path, ds: SegDataset) -> bool:
    """Is ``ds`` (opened from ``path``) the dataset of the run that ``record`` describes?

    Same resolved path; else the same dataset name, provided some of the run's case ids are
    in it (a moved copy), so an unrelated dataset that happens to share a folder name is not
    confused with it.
    """
    if record.get("dataset") and str(Path(path).expanduser().resolve()) == record["dataset"]:
        return True
    if record.get("dataset_name") != ds.name:
        return False
    known = set(ds.ids)
    return any(i in known for role in _STORED_ROLES for i in record.get(role, []))


def eval_split_ids(record: dict[str, Any] | None, path: str | Path, ds: SegDataset, split: str,
                   seen_roles: Sequence[str] = (), allow_seen: bool = False, what: str = "checkpoint") -> list[str]:
    """Labeled case ids of ``split`` to evaluate a checkpoint on, honouring its run's stored splits.

    ``record`` is the checkpoint meta's ``"splits"`` (:func:`splits_record`; ``None`` for old
    checkpoints). When ``ds`` is that run's dataset, ``split`` may name a stored role (test,
    val, labeled, unlabeled) or the split name the run read it from (``train`` -> labeled), and
    those ids are used; otherwise the data's own splits (``all``: every labeled case). With a
    stored record, cases of a group in ``seen_roles`` (what the checkpoint was trained or
    selected on) are refused unless ``allow_seen``. Prints one line saying where the ids came
    from; raises :class:`DataError` for an unknown split, refused seen cases or no labeled case.
    """
    same = record is not None and _matches_run(record, path, ds)
    note = None
    if record is not None and not same:
        print(f"note: the {what}'s run used dataset '{record.get('dataset_name')}' ({record.get('dataset')}); "
              f"{path} is another dataset, so its own splits are used")
    names = record.get("split_names", {}) if same else {}
    role = split if split in _STORED_ROLES else {"train": "labeled"}.get(
        next((r for r, n in names.items() if n == split), ""))
    if same and role:
        ids = list(record.get(role, []))
        known = set(ds.ids)
        absent = [i for i in ids if i not in known]
        if absent:
            raise DataError(f"{len(absent)} of the {len(ids)} case(s) of the run's stored '{role}' split are not "
                            f"in this dataset: {absent[:_SHOW]}", path)
        source = record.get("sources", {}).get("train" if role in ("labeled", "unlabeled") else role, "?")
        whence = "from the data" if source == "data" else f"{source}, seed {record.get('seed')}"
        note = f"{split}: the {len(ids)} case(s) of the run's '{role}' split (stored in the {what}; {whence})"
    elif split == "all":
        ids = [i for i in ds.ids if ds.has_labels(i)]
    elif split in ds.splits:
        ids = list(ds.splits[split])
    else:
        stored = ", ".join(_STORED_ROLES) + " (the run's splits), " if same else ""
        raise DataError(f"no split '{split}' (has: {stored}{', '.join(ds.splits) or 'none'}); use --split all "
                        f"for every labeled case", path)
    if same and seen_roles:
        seen_groups = {g for r in seen_roles for g in record.get("groups", {}).get(r, [])}
        seen = [i for i in ids if group_of(ds, i) in seen_groups]
        if seen and not allow_seen:
            raise DataError(f"{len(seen)} of the {len(ids)} case(s) of split '{split}' belong to patients/groups the "
                            f"{what} was trained or selected on ({', '.join(seen_roles)} of its run), e.g. "
                            f"{seen[:_SHOW]}; scores on them would overstate its accuracy. Evaluate held-out cases "
                            f"with --split test, or pass --allow-seen to score them anyway", path)
        if seen:
            print(f"warning: scoring {len(seen)} case(s) the {what} was trained or selected on (--allow-seen)",
                  file=sys.stderr)
    if note:
        print(note)
    labeled = [i for i in ids if ds.has_labels(i)]
    if not labeled:
        raise DataError(f"split '{split}' has no labeled case ({len(ids)} case(s), none with a mask): nothing to "
                        f"evaluate", path)
    if len(labeled) < len(ids):
        print(f"note: {len(ids) - len(labeled)} case(s) of split '{split}' have no mask and are not scored")
    return labeled
