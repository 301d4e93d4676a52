"""Runs and outputs are never destroyed by accident (issue 12, part 3): existing run folders,
resume with a changed config, the CSV metrics log, orphan checkpoint writes, and the one rule of
``predict`` / ``quality score`` for bad files (every good case processed, every bad one listed)."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_config, tiny_dataset
from PIL import Image

from qgseg.cli.main import main
from qgseg.engine import Interrupted
from qgseg.engine.checkpoint import save_checkpoint
from qgseg.engine.segmentation import SegmentationTrainer
from qgseg.quality.predictor import QualityPredictor


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("safety") / "data")


def _config(tmp_path, data) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": str(data), "image_size": [32, 32]}, "model": {"features": [8, 16, 32]},
        "train": {"batch_size": 4, "iterations": 2, "val_every": 1},
        "runtime": {"progress": False, "accelerator": "cpu"}, "eval": {"overlays": 0}}))
    return str(path)


def _val_steps(run) -> list[int]:
    with open(run / "logs" / "csv" / "metrics.csv") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh) if r.get("val/dice")]


def test_train_refuses_an_existing_run_unless_overwrite(data, tmp_path, capsys):
    config = _config(tmp_path, data)
    run = tmp_path / "runs" / "tiny"
    orphan = run / "checkpoints" / ".last.ckpt.ab12cd34.tmp"  # what a SIGKILL during a save leaves
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"partial")
    assert main(["train", config, "--no-eval"]) == 0
    out = capsys.readouterr().out
    assert not orphan.exists() and f"removed 1 unfinished checkpoint write(s) left by a killed run: {orphan}" in out
    best = run / "checkpoints" / "best.ckpt"
    stamp = best.stat().st_mtime_ns

    assert main(["train", config, "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert f"error: {run} already holds a run (checkpoints/best.ckpt, checkpoints/last.ckpt)" in err
    assert "--resume continues it, --overwrite replaces it, or choose another --name" in err
    assert best.stat().st_mtime_ns == stamp, "the refused run touched nothing"
    assert main(["train", config, "--no-eval", "--resume", "--overwrite"]) == 2
    assert "give only one" in capsys.readouterr().err

    (run / "eval").mkdir()
    (run / "eval" / "result.json").write_text("{}")  # describes the old model: must not survive a new one
    assert main(["train", config, "--no-eval", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"--overwrite: removing the previous run in {run} (checkpoints, eval, logs" in out
    assert best.stat().st_mtime_ns != stamp and not (run / "eval").exists()


def test_resume_refuses_a_changed_config_and_keeps_the_csv_log(data, tmp_path, capsys):
    config = _config(tmp_path, data)
    run = tmp_path / "runs" / "tiny"
    assert main(["train", config, "--no-eval"]) == 0
    saved = (run / "config.yaml").read_text()
    assert _val_steps(run) == [1, 2]
    capsys.readouterr()

    argv = ["train", config, "--no-eval", "--resume", "--set", "train.iterations=4"]
    assert main(argv + ["--set", "train.lr=0.01", "--set", "model.features=[8,16,64]"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {run}: the config differs" in err
    assert "  model.features: [8, 16, 32] -> [8, 16, 64]" in err and "  train.lr: 0.001 -> 0.01" in err
    assert "train.iterations" not in err.split("settings that may change")[0], "safe keys are not listed as errors"
    assert "--name" in err and "--overwrite" in err
    assert (run / "config.yaml").read_text() == saved, "a refused resume leaves config.yaml alone"

    assert main(argv) == 0  # train.iterations may change: announced and applied
    assert "resuming with a changed setting: train.iterations: 2 -> 4" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iterations"] == 4
    assert _val_steps(run) == [1, 2, 3, 4], "the CSV log keeps the first part's rows on resume"


def test_csv_log_is_on_disk_after_a_kill_and_not_duplicated_on_resume(data, tmp_path):
    cfg = tiny_config(data, tmp_path, train__iterations=4, train__val_every=1, train__checkpoint_every=2)
    with pytest.raises(Interrupted):
        SegmentationTrainer(cfg, tmp_path / "killed").fit(stop_after=3)
    assert _val_steps(tmp_path / "killed") == [1, 2, 3], "every validation so far is on disk"
    SegmentationTrainer(cfg, tmp_path / "killed").fit(resume=True)  # redoes iteration 3 from last.ckpt @ 2
    assert _val_steps(tmp_path / "killed") == [1, 2, 3, 4]


def test_demo_says_it_replaces_previous_results_and_its_runs_overwrite(data, tmp_path, monkeypatch, capsys):
    from qgseg import compare

    config = _config(tmp_path, data)
    grid = tmp_path / "runs" / "grid"
    (grid / "runs" / "sup_s0").mkdir(parents=True)
    (grid / "runs" / "sup_s0" / "result.json").write_text("{}")
    commands = []

    def execute(spec, slots, stop, fresh_log):  # record the child `qgseg run` instead of running it
        commands.append(spec.command)
        return compare.Outcome(spec, "failed", log_tail="not run (test)")

    monkeypatch.setattr(compare, "_execute", execute)
    # what `qgseg demo` without --resume does (fresh=True); `qgseg compare` keeps and resumes runs
    compare.run_compare(config, ["sup"], [0], name="grid", predictor=str(tmp_path / "g.ckpt"), fresh=True,
                        show=False)
    assert f"replacing the previous results in {grid} (1 run folder(s))" in capsys.readouterr().out
    assert commands[0][-1] == "--overwrite", "a fresh child run replaces the old one instead of being refused"
    compare.run_compare(config, ["sup"], [0], name="grid", predictor=str(tmp_path / "g.ckpt"), show=False)
    assert "replacing" not in capsys.readouterr().out and commands[1][-1] == "--resume"


# --------------------------------------------------------------------------- predict / quality score
@pytest.fixture(scope="module")
def seg_ckpt(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    cfg = tiny_config(data, root / "runs", train__iterations=1, train__val_every=1)
    SegmentationTrainer(cfg, root / "run").fit()
    return root / "run" / "checkpoints" / "best.ckpt"


def _bad_png(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return path


def test_predict_names_outputs_uniquely_reports_bad_files_and_keeps_old_masks(data, seg_ckpt, tmp_path, capsys):
    src = min((data / "images").glob("*.png"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(src, inputs / "a.png")
    shutil.copy(src, inputs / "x.png")
    Image.open(src).convert("L").save(inputs / "x.jpg")
    _bad_png(inputs / "bad.png")
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(seg_ckpt), "--input", str(inputs), "--output", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "wrote 1 mask(s)" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a.png"], "x.png and x.jpg would overwrite each other"
    err = captured.err
    assert f"failed: {inputs / 'x.png'}: same name as x.jpg" in err and f"failed: {inputs / 'x.jpg'}: same name as x.png" in err
    assert f"failed: {inputs / 'bad.png'}:" in err and "error: 3 image(s) failed" in err

    stamp = (out / "a.png").stat().st_mtime_ns
    assert main(argv) == 2
    assert f"--output {out} already holds 1 of the 2 file(s) this would write (e.g. a.png)" in capsys.readouterr().err
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert main(argv + ["--overwrite"]) == 1
    assert "wrote 1 mask(s)" in capsys.readouterr().out and (out / "a.png").stat().st_mtime_ns != stamp


@pytest.fixture(scope="module")
def q_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 1, depth=10, width=[4, 4, 8, 8], no_max_pool=True)
    meta = {"task": "quality", "predictor": model.config(), "classes": ["background", "lesion"],
            "image_channels": 1, "image_size": [32, 32], "normalize": "auto", "spatial_dims": 2, "resize": True}
    return save_checkpoint({"model": model.state_dict(), "meta": meta}, tmp_path_factory.mktemp("q") / "q.ckpt")


def test_quality_score_scores_every_good_pair_and_lists_every_bad_one(data, q_ckpt, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    ids = [p.stem for p in sorted((data / "masks").glob("*.png"))[:3]]
    images.mkdir()
    masks.mkdir()
    for i in ids:
        shutil.copy(data / "images" / f"{i}.png", images / f"{i}.png")
        shutil.copy(data / "masks" / f"{i}.png", masks / f"{i}.png")
    _bad_png(images / "corrupt.png")
    shutil.copy(data / "masks" / f"{ids[0]}.png", masks / "corrupt.png")
    shutil.copy(data / "images" / f"{ids[0]}.png", images / "small.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(masks / "small.png")
    shutil.copy(data / "images" / f"{ids[1]}.png", images / "nomask.png")
    out = tmp_path / "scores.csv"
    argv = ["quality", "score", "--predictor", str(q_ckpt), "--images", str(images), "--masks", str(masks),
            "--output", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    with open(out) as fh:
        assert sorted(r["case_id"] for r in csv.DictReader(fh)) == sorted(ids), "the good pairs are scored"
    with open(tmp_path / "scores_failures.csv") as fh:
        failed = {r["file"]: r for r in csv.DictReader(fh)}
    assert set(failed) == {str(images / "corrupt.png"), str(masks / "small.png"), str(images / "nomask.png")}
    assert "mask shape (16, 16) != image shape (32, 32)" in failed[str(masks / "small.png")]["reason"]
    assert failed[str(images / "nomask.png")]["reason"] == "image has no matching mask"
    for name in failed:
        assert f"failed: {name}: " in err
    assert "error: 3 file(s) failed" in err

    # --skip-bad: pairing problems are listed as skipped, not failures
    for name in ("corrupt.png", "small.png"):
        (images / name).unlink()
        (masks / name).unlink()
    assert main(argv + ["--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert f"skipped: {images / 'nomask.png'}: image has no matching mask" in err and "1 file(s) skipped" in err
