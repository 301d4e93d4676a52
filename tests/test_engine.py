"""The shared training engine: resume, checkpoints, schedules, EMA, early stopping."""
import json

import pytest
import torch

from qgseg.engine import EMA, Interrupted, load_checkpoint, save_checkpoint
from qgseg.engine.optim import lr_factor
from qgseg.engine.segmentation import SegmentationTrainer

from helpers import tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("demo"))


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_after_kill_gives_identical_weights(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path, train__deterministic="true", train__ema=0.9)
    full = SegmentationTrainer(cfg, tmp_path / "full")
    full.fit()

    killed = SegmentationTrainer(cfg, tmp_path / "killed")
    with pytest.raises(Interrupted):
        killed.fit(stop_after=6)  # last checkpoint was written at iteration 4
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")["iteration"] == 4
    resumed = SegmentationTrainer(cfg, tmp_path / "killed")
    result = resumed.fit(resume=True)
    assert result.iterations_done == 8

    a = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = _weights(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ea = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["ema"]["module"]
    eb = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")["ema"]["module"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_run_folder_contents(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path)
    result = SegmentationTrainer(cfg, tmp_path / "run").fit()
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "logs" / "csv" / "metrics.csv").is_file()
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents*"))
    history = json.loads((run / "train_history.json").read_text())
    assert [h["iteration"] for h in history["history"]] == [4, 8]
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")
    assert best["iteration"] == result.best_iteration
    assert best["meta"]["spec"]["classes"] == ["background", "lesion"]
    assert not list((run / "checkpoints").glob("*.tmp")), "no temporary files left behind"


def test_train_augment_settings_reach_the_labeled_batches(data_dir, tmp_path, monkeypatch):
    """train.augment is what the segmenter's labeled batches are augmented with; data.augment=false
    switches augmentation off."""
    import qgseg.engine.segmentation as seg

    seen = []
    real_spatial, real_intensity = seg.spatial_augment, seg.intensity_augment
    monkeypatch.setattr(seg, "spatial_augment", lambda x, y, g, c=None: seen.append(c) or real_spatial(x, y, g, c))
    monkeypatch.setattr(seg, "intensity_augment", lambda x, g, c=None: seen.append(c) or real_intensity(x, g, c))
    cfg = tiny_config(data_dir, tmp_path, train__iterations=2, train__val_every=2,
                      **{"train.augment.blur_p": 1.0, "train.augment.rotate_deg": 5.0})
    SegmentationTrainer(cfg, tmp_path / "aug").fit()
    assert len(seen) == 4 and all(c == cfg.train.augment for c in seen)
    assert cfg.train.augment.blur_p == 1.0 and cfg.train.augment.rotate_deg == 5.0
    seen.clear()
    off = tiny_config(data_dir, tmp_path, train__iterations=2, train__val_every=2, data__augment="false")
    SegmentationTrainer(off, tmp_path / "off").fit()
    assert seen == []


def test_early_stopping(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path, train__iterations=40, train__val_every=2, train__lr=0.0,
                      train__early_stop_patience=2)
    result = SegmentationTrainer(cfg, tmp_path / "es").fit()
    assert result.stopped_early
    assert result.iterations_done == 6  # best at 2, no improvement at 4 and 6 (lr=0)
    resumed = SegmentationTrainer(cfg, tmp_path / "es").fit(resume=True)
    assert resumed.stopped_early and resumed.iterations_done == 6, "a resumed early-stopped run trains no further"
    assert load_checkpoint(tmp_path / "es" / "checkpoints" / "last.ckpt")["iteration"] == 6
    # validations in the first half never count against the patience: no stop before it 20 + 2 * 2
    late = tiny_config(data_dir, tmp_path, train__iterations=40, train__val_every=2, train__lr=0.0,
                       train__early_stop_patience=2, train__early_stop_start=0.5)
    assert SegmentationTrainer(late, tmp_path / "es_late").fit().iterations_done == 24


def test_checkpoint_is_atomic_and_safe(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint({"w": torch.ones(3), "it": 1}, path)
    save_checkpoint({"w": torch.zeros(3), "it": 2}, path)
    state = load_checkpoint(path)
    assert state["it"] == 2 and torch.equal(state["w"], torch.zeros(3))
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="c.ckpt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.ckpt")


def test_lr_schedules():
    assert lr_factor("poly", 0, 100) == 1.0
    assert lr_factor("poly", 100, 100) == 0.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("constant", 70, 100) == 1.0
    assert lr_factor("poly", 4, 100, warmup=10) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lr_factor("step", 1, 10)


def test_ema_tracks_weights():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(50):
        ema.update(model)
    assert torch.allclose(ema.module.weight, torch.ones_like(model.weight), atol=1e-4)


def test_two_process_ddp_on_cpu(data_dir, tmp_path):
    """Fabric launches 2 gloo processes; validation is reduced across ranks; rank 0 writes."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "qgseg.cli.main", "train", "demo", "--set", f"data.dataset={data_dir}",
           "--set", "data.image_size=[32,32]", "--set", "model.features=[8,16,32]", "--set", "train.iterations=4",
           "--set", "train.val_every=2", "--set", "runtime.devices=2", "--set", "runtime.strategy=ddp",
           "--set", "runtime.accelerator=cpu", "--set", "runtime.progress=false", "--output-dir", str(tmp_path),
           "--name", "ddp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Starting with 2 processes" in out.stdout + out.stderr
    assert out.stdout.count("[4/4] val/dice") == 1, "only rank 0 prints"
    assert (tmp_path / "ddp" / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "ddp" / "eval" / "test_summary.json").is_file()


def test_3d_training_and_evaluation_in_mm(tmp_path):
    """A 3D network on the 3D demo data (nnU-Net layout, NIfTI spacing): patches for training,
    sliding-window inference on whole volumes, distances reported in mm."""
    from qgseg.pipeline import train_and_evaluate

    data = tiny_dataset(tmp_path / "d3", spatial_dims=3, size=(24, 24), depth=8, n_labeled=4, n_val=1, n_test=1,
                        n_unlabeled=0)
    cfg = tiny_config(data, tmp_path, data__image_size="[16,16,8]", data__resize="false", train__iterations=2,
                      train__val_every=2, train__batch_size=2)
    result = train_and_evaluate(cfg)
    assert result["test"]["unit"] == "mm"
    assert 0.0 <= result["test"]["mean_foreground"]["dice"]["mean"] <= 1.0
