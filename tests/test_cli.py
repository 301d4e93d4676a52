"""The qgseg command line, end to end on tiny data."""
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from qgseg.cli.main import COMMANDS, main
from qgseg.engine.segmentation import SegmentationTrainer

from conftest import require
from helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = tiny_dataset(root / "data")
    cfg = tiny_config(data, root / "runs", train__iterations=4, train__val_every=4)
    SegmentationTrainer(cfg, root / "run").fit()
    return data, root / "run" / "checkpoints" / "best.ckpt"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "qgseg.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout
    assert "quality" in out.stdout


def test_data_check_clean_dataset(trained, capsys):
    data, _ = trained
    assert main(["data", "check", str(data)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "cases" in out and "lesion" in out and "foreground" in out


def test_data_check_reports_every_problem(tmp_path, capsys):
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    good = np.zeros((16, 16), np.uint8)
    Image.fromarray(good).save(root / "images" / "a.png")
    Image.fromarray(good).save(root / "masks" / "a.png")
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(root / "images" / "size.png")
    Image.fromarray(good).save(root / "masks" / "size.png")
    Image.fromarray(good).save(root / "images" / "labels.png")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(root / "masks" / "labels.png")
    Image.fromarray(good).save(root / "images" / "lonely.png")
    Image.fromarray(good).save(root / "images" / "trunc.png")
    Image.fromarray(good).save(root / "masks" / "trunc.png")
    raw = (root / "images" / "trunc.png").read_bytes()
    (root / "images" / "trunc.png").write_bytes(raw[: len(raw) // 2])
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    for name in ("size.png", "labels.png", "lonely.png", "trunc.png"):
        assert name in out, f"{name} not reported:\n{out}"


def test_data_check_empty_folder(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert main(["data", "check", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_predict_png_folder_keeps_size(trained, tmp_path):
    data, ckpt = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, size in enumerate([(32, 32), (50, 41)]):
        Image.fromarray((np.random.rand(*size) * 255).astype(np.uint8)).save(inputs / f"x{i}.png")
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "x1.png"))
    assert out.shape == (50, 41) and set(np.unique(out)) <= {0, 255}


def test_predict_nifti_keeps_affine(trained, tmp_path):
    _, ckpt = trained
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[:3, 3] = [10, -5, 2]
    nib.save(nib.Nifti1Image((np.random.rand(30, 28, 4) * 100).astype(np.float32), affine), tmp_path / "v.nii.gz")
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "v.nii.gz"),
                 "--output", str(tmp_path / "out")]) == 0
    pred = nib.load(tmp_path / "out" / "v.nii.gz")
    assert pred.shape == (30, 28, 4)
    np.testing.assert_allclose(pred.affine, affine)


def test_evaluate_writes_results(trained, tmp_path, capsys):
    data, ckpt = trained
    assert main(["evaluate", "--checkpoint", str(ckpt), str(data), "--output", str(tmp_path / "ev")]) == 0
    assert "Dice" in capsys.readouterr().out
    assert (tmp_path / "ev" / "test_per_case.csv").is_file()
    assert (tmp_path / "ev" / "test_summary.json").is_file()
    assert list((tmp_path / "ev" / "overlays").glob("*.png"))


def test_config_errors_are_clear(capsys):
    assert main(["train", "demo", "--set", "train.iteratons=3"]) == 2
    assert "iteratons" in capsys.readouterr().err


def test_data_check_on_raw_ph2_samples(shared_data, capsys):
    ph2 = require(shared_data / "raw-samples" / "PH2")
    assert main(["data", "check", str(ph2)]) == 0
    assert "3 (3 labeled" in capsys.readouterr().out
