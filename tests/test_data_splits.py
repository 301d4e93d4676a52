"""Group-aware splits, the SSL4MIS "first N patients" protocol and split files."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require
from qgseg.data import DataError, first_groups, open_dataset, read_split_file, split_by_groups


def toy() -> tuple[list[str], dict[str, str | None]]:
    ids = [f"c{i}" for i in range(40)]
    groups: dict[str, str | None] = {i: f"g{int(i[1:]) // 4}" for i in ids}  # 10 groups of 4
    groups["c39"] = None  # its own group
    return ids, groups


def check_disjoint(out: dict[str, list[str]], groups: dict[str, str | None]) -> None:
    seen: dict[str, str] = {}
    for split, members in out.items():
        for i in members:
            g = groups.get(i) or f"solo:{i}"
            assert seen.setdefault(g, split) == split, f"group {g} crosses splits"


def test_split_fractions() -> None:
    ids, groups = toy()
    out = split_by_groups(ids, groups, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    check_disjoint(out, groups)
    assert sorted(sum(out.values(), [])) == sorted(ids)
    assert abs(len(out["train"]) - 28) <= 4 and abs(len(out["test"]) - 8) <= 4 and out["val"]
    assert out == split_by_groups(ids, groups, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    assert out != split_by_groups(ids, groups, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=4)
    assert out["train"] == [i for i in ids if i in set(out["train"])]  # keeps input order
    part = split_by_groups(ids, groups, {"train": 0.5}, seed=0)
    assert abs(len(part["train"]) - 20) <= 2


def test_split_counts_and_errors() -> None:
    ids, groups = toy()
    out = split_by_groups(ids, groups, {"labeled": 2, "rest": 8}, seed=1)
    check_disjoint(out, groups)
    assert len({groups[i] for i in out["labeled"]}) == 2
    with pytest.raises(ValueError):
        split_by_groups(ids, groups, {"a": 20}, seed=0)
    with pytest.raises(ValueError):
        split_by_groups(ids, groups, {"a": 0.8, "b": 0.5}, seed=0)
    with pytest.raises(ValueError):
        split_by_groups(ids, groups, {"a": 0.5, "b": 2}, seed=0)


def test_first_groups() -> None:
    ids = ["p2_s1", "p2_s2", "p1_s1", "p3_s1", "p1_s2", "p4_s1"]
    groups = {i: i.split("_")[0] for i in ids}
    assert first_groups(ids, groups, 2) == ["p2_s1", "p2_s2", "p1_s1", "p1_s2"]
    assert first_groups(ids, groups, 0) == []
    with pytest.raises(ValueError):
        first_groups(ids, groups, 5)


def test_read_split_file(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text("# header\nIMD001\n\nIMD002.jpg\n  IMD003  # note\n")
    assert read_split_file(f) == ["IMD001", "IMD002", "IMD003"]
    with pytest.raises(DataError, match="missing.txt"):
        read_split_file(tmp_path / "missing.txt")


def test_real_acdc_first_groups(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "ACDC"))
    train = ds.splits["train"]
    assert len(first_groups(train, ds.groups, 3)) == 68
    assert len(first_groups(train, ds.groups, 7)) == 136


def test_real_cvc_split_keeps_sequences_apart(shared_data: Path) -> None:
    ds = open_dataset(require(shared_data / "CVC-ColonDB"))
    out = split_by_groups(ds.ids, ds.groups, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    check_disjoint(out, ds.groups)
    seqs = [{ds.groups[i] for i in v} for v in out.values()]
    assert all(seqs) and sum(len(s) for s in seqs) == 15
