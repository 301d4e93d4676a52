"""Issue 12.1: given splits honoured, empty validation refused, splits stored, evaluation on the run's splits."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import tiny_dataset

from qgseg.cli.main import main
from qgseg.config import DataConfig
from qgseg.data.io import DataError
from qgseg.data.run_data import prepare_run_data, require_clean, splits_record
from qgseg.engine.checkpoint import load_checkpoint, save_checkpoint
from qgseg.quality.predictor import QualityPredictor

FAST = ["data.image_size=[16,16]", "model.features=[4,8,16]", "train.batch_size=2", "train.iterations=2",
        "train.val_every=2", "runtime.progress=false", "runtime.accelerator=cpu", "eval.overlays=0"]


def train_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    args = ["train", "demo", "--output-dir", str(out), "--name", name, "--set", f"data.dataset={data}"]
    for o in [*FAST, *extra]:
        args += ["--set", o]
    return args


def demo_without_test(root: Path) -> Path:
    """Demo data (8 train, 2 val, 3 test cases) whose splits/ has train.txt and val.txt only."""
    data = tiny_dataset(root, size=(16, 16))
    (data / "splits" / "test.txt").unlink()
    return data


def split_file(data: Path, name: str) -> list[str]:
    return (data / "splits" / f"{name}.txt").read_text().split()


def make_csv(root: Path, splits: list[str], missing: str | None = None, groups: list[str] | None = None) -> Path:
    """A CSV dataset over demo images with the given ``split`` column (``""``: no split) and
    ``group`` column (default: one group per case); ``missing`` names an extra row whose image
    file does not exist."""
    demo = tiny_dataset(root / "demo", n_labeled=len(splits), n_unlabeled=0, n_val=0, n_test=0, size=(16, 16))
    images = sorted((demo / "images").iterdir())
    groups = groups or [f"g{k}" for k in range(len(splits))]
    lines = ["case_id,image_path,mask_path,group,split"]
    lines += [f"c{k},demo/images/{img.name},demo/masks/{img.name},{group},{split}"
              for k, (img, group, split) in enumerate(zip(images, groups, splits))]
    if missing:
        lines.append(f"gone,demo/images/{missing},demo/masks/{images[0].name},gx,train")
    path = root / "cases.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny `qgseg train` on data with train and val splits but no test split."""
    root = tmp_path_factory.mktemp("splits")
    data = demo_without_test(root / "data")
    assert main(train_args(data, root / "runs", "r")) == 0
    return data, root / "runs" / "r"


# ----------------------------------------------------------------------------- given splits honoured
def test_given_train_and_val_are_kept_and_only_test_is_drawn(tmp_path, capsys):
    data = demo_without_test(tmp_path / "d")
    r = prepare_run_data(DataConfig(dataset=str(data)))
    assert r.labeled == split_file(data, "train") and r.val == split_file(data, "val")
    assert sorted(r.test) == ["demo_0010", "demo_0011", "demo_0012"]  # exactly the cases in no split
    assert r.split_sources == {"train": "data", "val": "data", "test": "drawn"} and r.split_seed == 0
    out = capsys.readouterr().out
    assert "splits: train 8, val 2 from the data; test 3 drawn from the 3 remaining case(s) (seed 0)" in out


def test_csv_with_train_and_test_draws_val_from_cases_in_no_split(tmp_path, capsys):
    csv_path = make_csv(tmp_path, ["train"] * 5 + ["test"] * 2 + [""] * 2)
    r = prepare_run_data(DataConfig(dataset=str(csv_path)))
    assert r.labeled == ["c0", "c1", "c2", "c3", "c4"] and r.test == ["c5", "c6"]
    assert r.val == ["c7", "c8"] and r.split_sources["val"] == "drawn"
    assert "train 5, test 2 from the data; val 2 drawn from the 2 remaining case(s) (seed 0)" in capsys.readouterr().out


def test_remaining_case_of_a_given_group_is_left_out_not_drawn(tmp_path, capsys):
    csv_path = make_csv(tmp_path, ["train", "train", "val", "", "", ""], groups=["p1", "p2", "p3", "p1", "p4", "p5"])
    r = prepare_run_data(DataConfig(dataset=str(csv_path)))
    assert sorted(r.test) == ["c4", "c5"] and "c3" not in r.labeled + r.val + r.test + r.unlabeled
    assert "1 remaining case(s) left out because their group is in a split the data gives: c3" \
        in capsys.readouterr().out


def test_leak_between_given_splits_says_they_came_from_the_data(tmp_path):
    csv_path = make_csv(tmp_path, ["train", "train", "val", "test"], groups=["p1", "p2", "p3", "p3"])
    with pytest.raises(DataError, match="test and val share 1 group.*The train, val, test split"):
        prepare_run_data(DataConfig(dataset=str(csv_path)))


def test_missing_test_split_that_cannot_be_formed_is_refused(tmp_path):
    csv_path = make_csv(tmp_path, ["train"] * 4 + ["val"] * 2)
    with pytest.raises(DataError, match="cannot form the test split 'test'.*no labeled case is left outside"):
        prepare_run_data(DataConfig(dataset=str(csv_path)))


def test_csv_with_train_and_test_and_nothing_left_refuses_to_train(tmp_path, capsys):
    csv_path = make_csv(tmp_path, ["train"] * 4 + ["test"] * 2)
    assert main(train_args(csv_path, tmp_path / "runs", "r")) == 2
    err = capsys.readouterr().err
    assert "validation split 'val'" in err and "is empty" in err
    assert "--set data.val_split=NAME" in err and "--set train.select=last" in err
    assert not (tmp_path / "runs" / "r" / "checkpoints").exists()


# ----------------------------------------------------------------------------- empty validation split
def make_ssl4mis_volumes(root: Path) -> Path:
    """SSL4MIS-style layout with train.list and test.list volumes but no val.list."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    lists = {"train": ["patient001_frame01", "patient002_frame01"], "test": ["patient003_frame01"]}
    for name in lists["train"] + lists["test"]:
        with h5py.File(root / "data" / f"{name}.h5", "w") as f:
            f["image"] = rng.random((2, 16, 16)).astype(np.float32)
            f["label"] = (rng.random((2, 16, 16)) > 0.5).astype(np.uint8)
    for split, names in lists.items():
        (root / f"{split}.list").write_text("\n".join(names) + "\n")
    return root


def test_empty_val_refused_unless_select_last_which_is_recorded(tmp_path, capsys):
    data = make_ssl4mis_volumes(tmp_path / "ssl")
    args = train_args(data, tmp_path / "runs", "r", "data.train_split=train_volumes")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "validation split 'val' of dataset 'ssl' is empty" in err and "train.select=last" in err
    assert main([*args, "--set", "train.select=last"]) == 0
    run_dir = tmp_path / "runs" / "r"
    history = json.loads((run_dir / "train_history.json").read_text())
    assert history["selection"] == "last (no validation)" and history["history"] == []  # never scored as 0
    assert json.loads((run_dir / "eval" / "result.json").read_text())["selection"] == "last (no validation)"
    best = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert best["iteration"] == 2 and best["meta"]["splits"]["sources"]["val"] == "none"


# ----------------------------------------------------------------------------- splits stored
def test_splits_json_and_checkpoint_meta_hold_the_ids(run):
    data, run_dir = run
    stored = json.loads((run_dir / "splits.json").read_text())
    assert stored["dataset"] == str(data.resolve()) and stored["seed"] == 0
    assert stored["sources"] == {"train": "data", "val": "data", "test": "drawn"}
    assert stored["labeled"] == split_file(data, "train") and stored["val"] == split_file(data, "val")
    assert sorted(stored["test"]) == ["demo_0010", "demo_0011", "demo_0012"]
    assert stored["unlabeled"] == ["demo_0013", "demo_0014", "demo_0015", "demo_0016"]
    assert stored["skipped"] == []
    meta = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["meta"]
    assert meta["splits"] == stored


# ----------------------------------------------------------------------------- evaluate on the run's splits
def test_evaluate_uses_the_stored_test_split(run, capsys):
    data, run_dir = run
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, str(data), "--split", "test", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test: the 3 case(s) of the run's 'test' split" in out and "seed 0" in out and "n = 3 cases" in out


def test_evaluate_refuses_seen_cases_unless_allowed(run, capsys):
    data, run_dir = run
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    for split, seen in (("all", "10 of the 13"), ("val", "2 of the 2"), ("train", "8 of the 8")):
        assert main(["evaluate", "--checkpoint", ckpt, str(data), "--split", split, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert f"{seen} case(s) of split '{split}'" in err and "trained or selected on" in err, split
        assert "--allow-seen" in err and "Traceback" not in err
    assert main(["evaluate", "--checkpoint", ckpt, str(data), "--split", "all", "--allow-seen",
                 "--device", "cpu"]) == 0
    assert "n = 13 cases" in capsys.readouterr().out


def test_evaluate_split_without_labeled_cases_is_one_message(run, capsys):
    data, run_dir = run
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    code = main(["evaluate", "--checkpoint", ckpt, str(data), "--split", "unlabeled", "--allow-seen",
                 "--device", "cpu"])
    assert code == 2
    assert "split 'unlabeled' has no labeled case" in capsys.readouterr().err


def test_quality_eval_refuses_the_predictors_training_cases(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "d", size=(16, 16))
    r = prepare_run_data(DataConfig(dataset=str(data)))
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 1, depth=10, width=[4, 4, 8, 8], no_max_pool=True)
    meta = {"task": "quality", "predictor": model.config(), "classes": ["background", "lesion"],
            "image_channels": 1, "image_size": [16, 16], "normalize": "auto", "spatial_dims": 2, "resize": True,
            "splits": splits_record(r)}
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta}, tmp_path / "q.ckpt")
    base = ["quality", "eval", "--predictor", str(ckpt), str(data), "--device", "cpu", "--masks-per-image", "1",
            "--output", str(tmp_path / "qe")]
    assert main([*base, "--split", "val"]) == 2
    assert "2 of the 2 case(s) of split 'val' belong to patients/groups the predictor was trained or selected on" \
        in capsys.readouterr().err
    # cross-dataset QC: on another dataset the stored splits do not apply; its labeled cases are all scored
    other = tiny_dataset(tmp_path / "other", seed=7, size=(16, 16))
    assert main(["quality", "eval", "--predictor", str(ckpt), str(other), "--device", "cpu", "--masks-per-image", "1",
                 "--split", "all", "--train-split", "none", "--output", str(tmp_path / "qe_other")]) == 0
    report = json.loads((tmp_path / "qe_other" / "quality_eval.json").read_text())
    assert report["synthetic"]["all"]["n"] == len(prepare_run_data(DataConfig(dataset=str(other))).dataset.labeled_ids)


# ----------------------------------------------------------------------------- cases that cannot be indexed
def test_csv_row_with_missing_file_fails_naming_it_and_skip_bad_records_it(tmp_path, capsys):
    csv_path = make_csv(tmp_path, ["train"] * 4 + ["val"] * 2 + ["test"] * 2, missing="nowhere.png")
    assert main(train_args(csv_path, tmp_path / "runs", "r")) == 2
    err = capsys.readouterr().err
    assert "1 case(s)/file(s) cannot be used" in err and "nowhere.png" in err and "--skip-bad" in err
    assert main([*train_args(csv_path, tmp_path / "runs", "r"), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipping 1 case(s)/file(s)" in captured.err and "nowhere.png" in captured.err
    skipped = json.loads((tmp_path / "runs" / "r" / "splits.json").read_text())["skipped"]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("nowhere.png")
    # evaluate opens the data itself: the same rule
    ckpt = str(tmp_path / "runs" / "r" / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, str(csv_path), "--device", "cpu"]) == 2
    assert "nowhere.png" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", ckpt, str(csv_path), "--device", "cpu", "--skip-bad"]) == 0


def test_require_clean_accepts_problem_strings():
    assert require_clean([], False, "x") == []
    with pytest.raises(DataError, match=r"2 case\(s\)/file\(s\) cannot be used:\n  a.png: no mask\n  b"):
        require_clean(["a.png: no mask", "b"], False, "folder")
    assert [p.message for p in require_clean(["a"], True, "folder")] == ["a"]
