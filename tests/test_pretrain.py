"""Self-supervised pretraining of the quality predictor's encoder (qgseg.quality.pretrain)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_quality_training import tiny_cfg

from qgseg.cli.main import main
from qgseg.data.demo import make_demo_dataset
from qgseg.quality.predictor import QualityPredictor, load_pretrained_backbone
from qgseg.quality.pretrain import damage, pretrain_encoder
from qgseg.quality.training import train_quality_predictor


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain")
    return make_demo_dataset(root / "data", seed=5, n_labeled=6, n_unlabeled=5, n_val=3, n_test=3, size=(32, 32),
                             channels=3)


def test_damage_changes_images_keeps_shape_and_is_seeded():
    x = torch.randn(4, 3, 32, 32)
    a = damage(x, torch.Generator().manual_seed(0))
    b = damage(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert torch.equal(x, x.clone())  # the input is not modified in place
    assert damage(torch.randn(2, 1, 8, 16, 16), torch.Generator().manual_seed(1)).shape == (2, 1, 8, 16, 16)


def test_pretrain_uses_only_training_images_and_loads_into_the_predictor(data_dir, tmp_path):
    cfg = tiny_cfg(data_dir, tmp_path / "runs")
    cfg.quality.pretrain.batch_size = 2
    out = tmp_path / "enc.pt"
    res = pretrain_encoder(cfg, out, steps=3, progress=False)
    record = json.loads(Path(f"{out}.json").read_text())
    # 6 labeled + 5 unlabeled training images; the 3 val and 3 test images are never used
    assert res.images == 11 == record["images"]
    assert record["image_sources"] == {"labeled": 6, "unlabeled": 5, "extra_pool": 0}
    assert torch.isfinite(torch.tensor([res.first_loss, res.final_loss])).all()
    q = cfg.quality
    model = QualityPredictor(2, 3, 1, depth=q.depth, width=q.width, no_max_pool=True, truth_decoder=True)
    assert load_pretrained_backbone(model, out) == []  # every backbone tensor loaded
    saved = torch.load(out, weights_only=True)["state_dict"]["conv1.weight"]
    conv1 = model.backbone.conv1.weight
    assert torch.equal(conv1[:, :3], saved)  # image channels keep their pretrained kernel
    assert torch.allclose(conv1[:, 3:], saved.mean(1, keepdim=True))  # the mask channel starts from the mean


def test_quality_train_chains_pretraining_and_records_it(data_dir, tmp_path):
    cfg = tiny_cfg(data_dir, tmp_path / "runs", epochs=1, weak_probability=0.0)
    cfg.quality.pretrain.steps, cfg.quality.pretrain.batch_size = 2, 2
    res = train_quality_predictor(cfg, tmp_path / "runs" / "q", evaluate=False)
    weights = tmp_path / "runs" / "q" / "pretrain" / "encoder.pt"
    assert weights.is_file() and res["pretraining"]["steps"] == 2 and res["pretraining"]["images"] == 11
    assert cfg.quality.pretrained == str(weights)


def test_cli_pretrain_writes_weights_and_never_overwrites(data_dir, tmp_path, capsys):
    cfg = tiny_cfg(data_dir, tmp_path / "runs")
    from qgseg.config import save_config

    save_config(cfg, tmp_path / "q.yaml")
    out = tmp_path / "w" / "enc.pt"
    args = ["quality", "pretrain", str(tmp_path / "q.yaml"), "--steps", "2", "--output", str(out),
            "--set", "quality.pretrain.batch_size=2"]
    assert main(args) == 0
    assert out.is_file() and "use them with --set quality.pretrained=" in capsys.readouterr().out
    assert main(args) == 2
    assert "weight file exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
