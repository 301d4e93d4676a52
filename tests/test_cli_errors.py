"""Every CLI failure is one clear ``error:`` line with exit code 1 or 2, never a traceback (issue 12 part 4)."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from helpers import tiny_dataset
from PIL import Image

import qgseg.cli.main as cli
from qgseg.cli.main import main
from qgseg.engine.checkpoint import save_checkpoint
from qgseg.evaluation.inference import ModelSpec
from qgseg.quality.predictor import QualityPredictor

CLASSES = ["background", "lesion"]


def _seg_checkpoint(path, channels: int = 1):
    """An untrained tiny U-Net saved as ``qgseg train`` saves it (enough for the plumbing)."""
    torch.manual_seed(0)
    spec = ModelSpec("unet", 2, channels, CLASSES, [32, 32], features=[4, 8])
    return save_checkpoint({"model": spec.build().state_dict(),
                            "meta": {"spec": spec.to_dict(), "task": "segmentation"}}, path)


def _quality_checkpoint(path, channels: int = 1):
    torch.manual_seed(0)
    model = QualityPredictor(2, channels, 1, depth=10, width=[4, 4, 8, 8], no_max_pool=True)
    meta = {"task": "quality", "predictor": model.config(), "classes": CLASSES, "image_channels": channels,
            "image_size": [32, 32], "normalize": "auto", "spatial_dims": 2, "resize": True}
    return save_checkpoint({"model": model.state_dict(), "meta": meta}, path)


def _rgb_folder(root):
    """A labeled folder dataset of two 32x32 RGB images."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    data = tiny_dataset(root / "data", n_labeled=2, n_unlabeled=0, n_val=1, n_test=2)
    seg, quality = _seg_checkpoint(root / "seg.ckpt"), _quality_checkpoint(root / "q.ckpt")
    raw = seg.read_bytes()
    (root / "truncated.ckpt").write_bytes(raw[:len(raw) // 2])
    (root / "corrupt.ckpt").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    torch.save({"model": _Payload(root / "PAYLOAD_RAN")}, root / "malicious.ckpt")
    return {"root": root, "data": data, "seg": seg, "q": quality, "rgb": _rgb_folder(root / "rgb")}


class _Payload:
    """Unpickling this would create ``marker``: proof that a checkpoint's code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_error(capsys, code: int, expected_code: int | tuple[int, ...] = 2) -> str:
    """The captured stderr after asserting one ``error:`` line, the exit code and no traceback."""
    err = capsys.readouterr().err
    codes = expected_code if isinstance(expected_code, tuple) else (expected_code,)
    assert code in codes, err
    assert "Traceback" not in err and "weights_only" not in err, err
    assert sum("error:" in line for line in err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "malicious"])
def test_unreadable_checkpoint_is_one_message_and_never_runs(env, capsys, kind):
    ckpt = env["root"] / f"{kind}.ckpt"
    err = _one_error(capsys, main(["evaluate", "--checkpoint", str(ckpt), str(env["data"])]))
    assert f"{ckpt}: not a readable qgseg checkpoint" in err and "nothing in it was executed" in err
    assert not (env["root"] / "PAYLOAD_RAN").exists()


def test_segmenter_checkpoint_where_a_predictor_is_expected_and_vice_versa(env, capsys):
    data, seg, q = str(env["data"]), str(env["seg"]), str(env["q"])
    out = env["root"] / "kind_out"
    for argv in (["quality", "eval", "--predictor", seg, data, "--split", "all", "--output", str(out)],
                 ["quality", "score", "--predictor", seg, "--images", f"{data}/images", "--masks", f"{data}/masks",
                  "--output", str(out / "s.csv")],
                 ["run", "demo", "--predictor", seg, "--output-dir", str(out)]):
        err = _one_error(capsys, main(argv))
        assert f"{seg}: this is a segmentation checkpoint; a quality-predictor checkpoint is expected" in err
    for argv in (["evaluate", "--checkpoint", q, data, "--split", "all"],
                 ["predict", "--checkpoint", q, "--input", f"{data}/images", "--output", str(out / "pred")]):
        err = _one_error(capsys, main(argv))
        assert f"{q}: this is a quality-predictor checkpoint; a segmentation checkpoint is expected" in err
        assert "qgseg train" in err
    assert not (out / "run").exists()  # nothing was trained before the refusal


def test_channel_mismatch_names_the_image_and_both_counts(env, capsys):
    rgb = env["rgb"]
    err = _one_error(capsys, main(["evaluate", "--checkpoint", str(env["seg"]), str(rgb), "--split", "all"]))
    assert "a.png" in err and "3 channel(s)" in err and "expects 1" in err
    err = _one_error(capsys, main(["quality", "eval", "--predictor", str(env["q"]), str(rgb), "--split", "all",
                                   "--output", str(env["root"] / "qe_rgb")]))
    assert "a.png" in err and "3 channel(s)" in err and "quality predictor expects 1" in err
    out = env["root"] / "pred_rgb"
    for argv in (["predict", "--checkpoint", str(env["seg"]), "--input", str(rgb / "images"), "--output", str(out)],
                 ["quality", "score", "--predictor", str(env["q"]), "--images", str(rgb / "images"), "--masks",
                  str(rgb / "masks"), "--output", str(out / "scores.csv")]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err, err
        assert f"{rgb / 'images' / 'a.png'}: image has 3 channel(s)" in err and "expects 1" in err


def test_grey_image_for_an_rgb_model_is_converted_with_a_warning(env, capsys):
    rgb_model = _seg_checkpoint(env["root"] / "seg_rgb.ckpt", channels=3)
    out = env["root"] / "pred_grey"
    images = env["data"] / "images"
    assert main(["predict", "--checkpoint", str(rgb_model), "--input", str(images), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "grey image converted to RGB" in err
    assert len(list(out.glob("*.png"))) == len(list(images.iterdir()))


@pytest.mark.parametrize("command", ["predict", "evaluate", "quality eval"])
def test_output_that_is_a_file_where_a_folder_is_expected(env, capsys, command):
    existing = env["root"] / f"existing_{command.replace(' ', '_')}.txt"
    existing.write_text("keep me")
    data = str(env["data"])
    argv = {"predict": ["predict", "--checkpoint", str(env["seg"]), "--input", f"{data}/images"],
            "evaluate": ["evaluate", "--checkpoint", str(env["seg"]), data, "--split", "all"],
            "quality eval": ["quality", "eval", "--predictor", str(env["q"]), data, "--split", "all"]}[command]
    err = _one_error(capsys, main(argv + ["--output", str(existing)]))
    assert f"--output {existing}: is an existing file, but a folder is expected" in err
    assert existing.read_text() == "keep me"


def test_output_that_is_a_folder_where_a_file_is_expected(env, capsys):
    data = str(env["data"])
    folder = env["root"] / "a_folder"
    folder.mkdir()
    err = _one_error(capsys, main(["quality", "score", "--predictor", str(env["q"]), "--images", f"{data}/images",
                                   "--masks", f"{data}/masks", "--output", str(folder)]))
    assert f"--output {folder}: is a folder, but a file is expected" in err


def test_mask_pattern_without_stem_is_an_argument_error(env, capsys):
    data = str(env["data"])
    with pytest.raises(SystemExit) as exc:
        main(["quality", "score", "--predictor", str(env["q"]), "--images", f"{data}/images", "--masks",
              f"{data}/masks", "--mask-pattern", "seg"])
    assert exc.value.code == 2
    err = _one_error(capsys, 2)
    assert "--mask-pattern" in err and "{stem}" in err


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_device_without_cuda(env, capsys, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _one_error(capsys, main(["predict", "--checkpoint", str(env["seg"]), "--input",
                                   str(env["data"] / "images"), "--output", str(env["root"] / "p_cuda"),
                                   "--device", device]))
    assert f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}" in err
    assert "use --device cpu" in err


def test_disk_full_and_permission_errors_name_the_path(env, capsys, monkeypatch):
    from qgseg.quality import scoring

    data = str(env["data"])
    target = env["root"] / "full.csv"
    argv = ["quality", "score", "--predictor", str(env["q"]), "--images", f"{data}/images", "--masks",
            f"{data}/masks", "--output", str(target)]

    def full(rows, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(scoring, "write_scores_csv", full)
    err = _one_error(capsys, main(argv), 1)
    assert f"error: no space left on device while writing {target}" in err

    def denied(rows, path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(scoring, "write_scores_csv", denied)
    err = _one_error(capsys, main(argv))
    assert f"error: {target}: {os.strerror(errno.EACCES)}" in err


@pytest.mark.parametrize("override, expected", [
    ("data.image_size=[30,30]", ("multiple of 4, the total down-sampling of model unet with 3 feature levels; "
                                 "nearest valid size for 30: 28 or 32")),
    ("data.image_size=[0,32]", "data.image_size entries must be > 0"),
    ("train.lr=-0.001", "train.lr must be >= 0, got -0.001"),
    ("train.iterations=0", "train.iterations must be >= 1"),
    ("quality.batch_size=0", "quality.batch_size must be > 0"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
])
def test_config_values_are_validated_before_any_work(tmp_path, capsys, override, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  dataset: {tmp_path / 'absent'}\n  image_size: [32, 32]\n"
                   "model:\n  features: [8, 16, 32]\n")
    err = _one_error(capsys, main(["train", str(cfg), "--set", override, "--output-dir", str(tmp_path / "runs")]))
    assert expected in err


def test_swin_and_unetpp_strides(tmp_path):
    from qgseg.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="multiple of 32.*swin-unetr; nearest valid size for 80: 64 or 96"):
        load_config(None, ["model.name=swin-unetr", "data.image_size=[80,80]"])
    with pytest.raises(ConfigError, match="multiple of 16.*unet\\+\\+.*224 or 240"):
        load_config(None, ["model.name=unet++", "data.image_size=[230,224]"])
    load_config(None, ["model.name=unet++", "data.image_size=[224,224]"])  # the presets' size is valid


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(env, capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("something broke\nsecond line of detail")

    monkeypatch.setattr(cli, "cmd_data_check", boom)
    monkeypatch.delenv("QGSEG_DEBUG", raising=False)
    err = _one_error(capsys, main(["data", "check", str(env["data"])]), 1)
    assert "error: RuntimeError: something broke" in err and "second line" not in err
    assert "--debug" in err and "QGSEG_DEBUG=1" in err
    with pytest.raises(RuntimeError, match="something broke"):
        main(["--debug", "data", "check", str(env["data"])])
    with pytest.raises(RuntimeError, match="something broke"):
        main(["data", "check", str(env["data"]), "--debug"])
    monkeypatch.setenv("QGSEG_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["data", "check", str(env["data"])])


@pytest.mark.parametrize("preset", ["ph2", "cvc_colondb", "acdc", "ssl_ph2", "ssl_colondb", "ssl_acdc"])
def test_presets_default_to_cpu_sizes_with_valid_gpu_sizes_beside_them(preset):
    from qgseg.config import load_config, preset_gpu_overrides

    cpu = load_config(preset)
    assert max(cpu.data.image_size) <= 128 and cpu.model.name == "unet" and cpu.train.iterations <= 3000
    gpu = preset_gpu_overrides(preset)
    assert any(o.startswith("data.image_size=") for o in gpu) and any(o.startswith("train.iterations=") for o in gpu)
    assert max(load_config(preset, gpu).data.image_size) > 128  # the GPU sizes pass validation too


def test_help_imports_nothing_heavy():
    import subprocess
    import sys

    for args in (["--help"], ["quality", "score", "--help"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "qgseg.cli.main", *args],
                             capture_output=True, text=True, check=True)
        heavy = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
        assert not heavy & {"torch", "monai", "lightning"}, args


def test_a_full_disk_while_saving_a_checkpoint_names_the_checkpoint(tmp_path, monkeypatch):
    def full(state, fh):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write to a full disk raises: no file name

    monkeypatch.setattr(torch, "save", full)
    target = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(OSError) as exc:
        save_checkpoint({"model": {}}, target)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert list(target.parent.iterdir()) == []  # no temporary file left behind


def test_first_line_comes_before_the_slow_imports_and_loading_shows_progress(env, capsys):
    from qgseg.data.detect import open_dataset
    from qgseg.data.loading import load_cases

    main(["evaluate", "--checkpoint", str(env["q"]), str(env["data"]), "--split", "all"])
    assert capsys.readouterr().err.startswith(f"qgseg evaluate: loading {env['q']} ...\n")
    ds = open_dataset(env["data"])
    assert [c.case_id for c in load_cases(ds, ds.ids[:2], "loading labeled cases", progress=True)] == ds.ids[:2]
    assert "loading labeled cases" in capsys.readouterr().err
    load_cases(ds, ds.ids[:2], "loading labeled cases", progress=False)  # runtime.progress=false: silent
    assert capsys.readouterr().err == ""
