"""`data.splits_dir`: a protocol's split listed beside its config replaces the data's splits."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_dataset

from qgseg.config import DataConfig
from qgseg.data.io import DataError
from qgseg.data.run_data import prepare_run_data


def test_split_files_outside_the_data(tmp_path: Path, capsys) -> None:
    data = tiny_dataset(tmp_path / "d", size=(16, 16))
    ids = sorted(p.stem for p in (data / "images").iterdir())
    listed = tmp_path / "splits"
    listed.mkdir()
    (listed / "train.txt").write_text("# a comment\n" + "\n".join(ids[:4]) + "\n")
    (listed / "val.txt").write_text(ids[4] + "\n")
    (listed / "test.txt").write_text("\n".join(ids[5:7]) + "\n")
    run = prepare_run_data(DataConfig(dataset=str(data), splits_dir=str(listed)))
    assert (run.labeled, run.val, run.test) == (ids[:4], [ids[4]], ids[5:7])
    assert "splits: train 4, val 1, test 2 from the data" in capsys.readouterr().out
    (listed / "test.txt").write_text("nope\n")
    with pytest.raises(DataError, match="test.txt: 1 ids not in dataset"):
        prepare_run_data(DataConfig(dataset=str(data), splits_dir=str(listed)))
    with pytest.raises(DataError, match="data.splits_dir: no such folder"):
        prepare_run_data(DataConfig(dataset=str(data), splits_dir=str(tmp_path / "none")))
