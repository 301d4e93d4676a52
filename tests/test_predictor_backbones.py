"""Quality-predictor backbones (``quality.backbone``): ResNet, MONAI DenseNet-121 and EfficientNet-B0."""
from __future__ import annotations

import pytest
import torch
from test_quality_training import tiny_cfg

from qgseg.config import ConfigError, load_config
from qgseg.data.demo import make_demo_dataset
from qgseg.data.run_data import prepare_run_data
from qgseg.engine.checkpoint import save_checkpoint
from qgseg.quality.predictor import (
    FIRST_CONV,
    QualityPredictor,
    load_pretrained_backbone,
)
from qgseg.quality.scoring import (
    QualityScorer,
    load_predictor_checkpoint,
    load_quality_predictor,
)
from qgseg.quality.training import train_quality_predictor

BACKBONES = ["resnet", "densenet121", "efficientnet-b0"]


def build(backbone: str, spatial_dims: int = 2, image_channels: int = 3, k: int = 2, **kw) -> QualityPredictor:
    torch.manual_seed(0)
    width = 8 if backbone == "resnet" else None  # the other backbones have MONAI's standard widths
    return QualityPredictor(spatial_dims, image_channels, k, backbone=backbone, depth=10, width=width,
                            no_max_pool=True, **kw)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_scores_and_qar_gradient(backbone):
    # a 48 px input seen through the 32 px mask-centred crop: the ROI path is backbone-agnostic
    model = build(backbone, roi_size=[32, 32], dropout=0.1)
    image = torch.rand(2, 3, 48, 48)
    masks = torch.zeros(2, 2, 48, 48)
    masks[:, :, 10:30, 12:34] = 0.9
    masks.requires_grad_(True)
    out = model(image, masks)
    assert out.shape == (2, 2) and bool(((out >= 0) & (out <= 1)).all())
    out.sum().backward()  # QAR back-propagates the score into the segmenter's soft masks
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    assert model.config()["backbone"] == backbone


@pytest.mark.parametrize(("backbone", "side"), [("densenet121", 16), ("efficientnet-b0", 32)])
def test_3d_forward_and_smallest_input(backbone, side):
    model = build(backbone, spatial_dims=3, image_channels=1, k=1).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, side, side, side), torch.ones(1, 1, side, side, side))
        assert out.shape == (1, 1) and 0.0 <= float(out) <= 1.0
        small = side // 2  # below what the backbone's downsampling takes: one clear message, not a conv error
        with pytest.raises(ValueError, match=f"needs inputs of at least {side} px"):
            model(torch.rand(1, 1, small, small, small), torch.ones(1, 1, small, small, small))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_checkpoint_round_trip_gives_identical_scores(backbone, tmp_path):
    model = build(backbone, k=1).eval()
    meta = {"task": "quality", "predictor": model.config(), "classes": ["background", "lesion"],
            "image_channels": 3, "image_size": [32, 32], "normalize": "none", "spatial_dims": 2}
    path = save_checkpoint({"model": model.state_dict(), "meta": meta}, tmp_path / "best.ckpt")
    loaded, _, _ = load_predictor_checkpoint(path)
    assert loaded.backbone_name == backbone and type(loaded.backbone) is type(model.backbone)
    image, masks = torch.rand(3, 3, 32, 32), (torch.rand(3, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(image, masks), model(image, masks))
    # flip TTA and the flip-spread uncertainty of the scorer work on every backbone
    dice, unc = QualityScorer(loaded, meta, tta=True).predict(image, masks, return_uncertainty=True)
    assert dice.shape == unc.shape == (3, 1) and bool((unc >= 0).all())


def test_checkpoints_without_a_backbone_key_load_as_resnet():
    cfg = build("resnet").config()
    del cfg["backbone"]  # written before quality.backbone existed
    assert QualityPredictor.from_config(cfg).backbone_name == "resnet"


def test_non_resnet_backbones_refuse_resnet_only_options():
    with pytest.raises(ValueError, match="truth-map decoder needs a ResNet backbone"):
        build("densenet121", truth_decoder=True)
    with pytest.raises(ValueError, match="ResNet stage widths"):
        QualityPredictor(2, 3, 1, backbone="efficientnet-b0", width=8)
    with pytest.raises(ValueError, match="backbone must be one of"):
        QualityPredictor(2, 3, 1, backbone="vgg16")


def test_config_refusals(tmp_path):
    base = {"runtime": {"accelerator": "cpu", "progress": False}}
    with pytest.raises(ConfigError, match="truth-map decoder needs a ResNet backbone.*quality.truth_map_weight=0"):
        load_config({**base, "quality": {"backbone": "densenet121"}})  # the decoder is on by default
    with pytest.raises(ConfigError, match="quality.width"):
        load_config({**base, "quality": {"backbone": "densenet121", "truth_map_weight": 0, "width": [8, 8, 16, 16]}})
    with pytest.raises(ConfigError, match="quality.backbone"):
        load_config({**base, "quality": {"backbone": "vgg16"}})
    cfg = load_config({**base, "quality": {"backbone": "efficientnet-b0", "truth_map_weight": 0}})
    assert cfg.quality.backbone == "efficientnet-b0"


def test_train_densenet_predictor_and_score_with_it(tmp_path):
    data_dir = make_demo_dataset(tmp_path / "data", seed=3, n_labeled=4, n_unlabeled=0, n_val=2, n_test=2,
                                 size=(32, 32))
    # 4 images x 2 masks / batch 4 = 2 iterations in one epoch; one weak snapshot of 2 iterations
    cfg = tiny_cfg(data_dir, tmp_path / "runs", backbone="densenet121", truth_map_weight=0, width=None,
                   epochs=1, batch_size=4, weak_epochs=[1])
    data = prepare_run_data(cfg.data, cfg.output_dir)
    result = train_quality_predictor(cfg, tmp_path / "q", data=data, evaluate=False)
    assert result["iterations"] == 2 and result["best_val_mae"] is not None
    scorer = load_quality_predictor(result["checkpoint"])  # what `qgseg quality eval` / `score` do
    assert scorer.model.backbone_name == "densenet121" and scorer.model.decoder is None
    case = data.dataset.load(data.test[0])
    out = scorer.score(case, case.label)
    assert out.shape == (1,) and 0.0 <= out[0] <= 1.0


@pytest.mark.parametrize("backbone", ["densenet121", "efficientnet-b0"])
def test_pretrained_backbone_file_loads_with_first_conv_adapted(backbone, tmp_path):
    source = build(backbone, image_channels=3, k=1)
    torch.save(source.backbone.state_dict(), tmp_path / "enc.pt")
    target = build(backbone, image_channels=1, k=2)  # other channel count: the first conv is adapted
    not_loaded = load_pretrained_backbone(target, tmp_path / "enc.pt")
    assert not (set(target.backbone.state_dict()) & set(not_loaded))
    key = FIRST_CONV[backbone]
    assert target.backbone.state_dict()[key].shape[1] == 3  # 1 image + 2 mask channels
