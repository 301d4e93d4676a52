"""QualityPredictor: shapes, differentiability w.r.t. masks, config round-trip, local pretrained weights."""
from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import ResNet
from safetensors.torch import save_file

from qgseg.quality.predictor import (
    QualityPredictor,
    labels_to_fg_onehot,
    load_pretrained_backbone,
    probs_to_fg,
    agreement_dice,
    soft_dice,
)

W = 4  # stage widths [4, 8, 16, 32]: keeps every test well under a second on CPU


@pytest.mark.parametrize(
    "spatial_dims,image_channels,k,depth",
    [(2, 1, 1, 18), (2, 3, 3, 18), (3, 1, 3, 10), (3, 3, 1, 18), (2, 1, 3, 50)],
)
def test_forward_shapes_and_range(spatial_dims: int, image_channels: int, k: int, depth: int) -> None:
    torch.manual_seed(0)
    size = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    model = QualityPredictor(spatial_dims, image_channels, k, depth=depth, width=W, dropout=0.1)
    image = torch.randn(2, image_channels, *size)
    soft_masks = torch.rand(2, k, *size)  # soft masks in [0, 1] are valid input
    out = model(image, soft_masks)
    assert out.shape == (2, k)
    assert torch.all((out >= 0) & (out <= 1))
    # forward_concat on the same tensor gives the same result (eval: no dropout/BN batch stats).
    model.eval()
    a = model(image, soft_masks)
    b = model.forward_concat(torch.cat([image, soft_masks], dim=1))
    torch.testing.assert_close(a, b)


def test_input_validation() -> None:
    model = QualityPredictor(2, 1, 2, width=W)
    with pytest.raises(ValueError):
        model(torch.randn(2, 1, 32, 32), torch.rand(2, 3, 32, 32))  # wrong K
    with pytest.raises(ValueError):
        model(torch.randn(2, 1, 32, 32), torch.rand(2, 2, 16, 16))  # spatial mismatch
    with pytest.raises(ValueError):
        QualityPredictor(2, 1, 2, depth=101)


def test_gradient_flows_to_masks_and_segmenter_logits() -> None:
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 2, width=W)
    image = torch.randn(2, 1, 32, 32)
    # Simulate QAR: segmenter logits -> softmax -> foreground probs -> g -> loss.
    logits = torch.randn(2, 3, 32, 32, requires_grad=True)
    masks = probs_to_fg(torch.softmax(logits, dim=1))
    masks.retain_grad()
    loss = (1 - model(image, masks)).mean()
    loss.backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_mask_helpers() -> None:
    label = torch.tensor([[[0, 1], [2, 1]]])  # (1, 2, 2)
    fg = labels_to_fg_onehot(label, num_classes=3)
    assert fg.shape == (1, 2, 2, 2) and fg.dtype == torch.float32
    torch.testing.assert_close(fg[0, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(fg[0, 1], torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(labels_to_fg_onehot(label[:, None].float(), 3, has_channel=True), fg)
    probs = torch.softmax(torch.randn(2, 4, 8, 8, 8), dim=1)
    assert probs_to_fg(probs).shape == (2, 3, 8, 8, 8)
    with pytest.raises(ValueError):
        probs_to_fg(torch.rand(2, 1, 8, 8))


def test_config_round_trip_same_outputs() -> None:
    torch.manual_seed(0)
    model = QualityPredictor(3, 1, 2, depth=10, width=[4, 8, 8, 16], dropout=0.2, no_max_pool=True,
                             norm=("group", {"num_groups": 2}))
    cfg = json.loads(json.dumps(model.config()))  # must survive a JSON checkpoint header
    clone = QualityPredictor.from_config(cfg)
    assert clone.config() == model.config()
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    image, masks = torch.randn(2, 1, 16, 16, 16), torch.rand(2, 2, 16, 16, 16)
    torch.testing.assert_close(model(image, masks), clone(image, masks))
    with pytest.raises(TypeError):
        QualityPredictor.from_config({**cfg, "unknown": 1})


def _rgb_resnet18() -> ResNet:
    """A small 2D "ImageNet-style" ResNet-18 (3 input channels, 10-way fc) standing in for real weights."""
    return ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[W, 2 * W, 4 * W, 8 * W], spatial_dims=2,
                  n_input_channels=3, conv1_t_stride=2, shortcut_type="B", bias_downsample=False, num_classes=10)


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_load_pretrained_rgb_into_four_channels(tmp_path, fmt: str) -> None:
    torch.manual_seed(0)
    src = _rgb_resnet18().state_dict()
    path = tmp_path / f"rgb_resnet18.{fmt}"
    if fmt == "pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}}, path)  # wrapped + prefixed
    else:
        save_file({k: v.contiguous() for k, v in src.items()}, str(path))

    model = QualityPredictor(2, image_channels=3, num_fg_classes=1, width=W)  # 3 + 1 = 4 input channels
    skipped = load_pretrained_backbone(model, path)
    assert "fc.weight" in skipped and "fc.bias" in skipped
    assert "conv1.weight" not in skipped and not any(k.startswith("layer") for k in skipped)
    w = model.backbone.conv1.weight.detach()
    assert w.shape[1] == 4
    torch.testing.assert_close(w[:, :3], src["conv1.weight"])  # RGB kernel kept exactly
    torch.testing.assert_close(w[:, 3], src["conv1.weight"].mean(dim=1))  # mask channel: mean kernel
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight.detach(), src["layer3.1.conv2.weight"])
    torch.testing.assert_close(model.backbone.bn1.running_mean, src["bn1.running_mean"])
    model.eval()
    out = model(torch.randn(2, 3, 32, 32), torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1) and torch.isfinite(out).all()


def test_load_pretrained_tiles_when_image_channels_differ(tmp_path) -> None:
    src = _rgb_resnet18().state_dict()
    path = tmp_path / "w.pth"
    torch.save(src, path)
    model = QualityPredictor(2, image_channels=1, num_fg_classes=3, width=W)  # 4 channels, grey image
    load_pretrained_backbone(model, path)
    w = model.backbone.conv1.weight.detach()
    expected = torch.cat([src["conv1.weight"], src["conv1.weight"][:, :1]], dim=1) * (3 / 4)
    torch.testing.assert_close(w, expected)


def test_load_pretrained_errors(tmp_path) -> None:
    model = QualityPredictor(2, 1, 1, width=W)
    with pytest.raises(FileNotFoundError):
        load_pretrained_backbone(model, tmp_path / "missing.pt")
    path = tmp_path / "unrelated.pt"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError):
        load_pretrained_backbone(model, path)


# --------------------------------------------------------------------------- truth-map decoder
@pytest.mark.parametrize("spatial_dims,image_channels,k", [(2, 3, 1), (2, 1, 3), (3, 1, 2)])
def test_truth_decoder_outputs_and_gradients(spatial_dims: int, image_channels: int, k: int) -> None:
    torch.manual_seed(0)
    size = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    model = QualityPredictor(spatial_dims, image_channels, k, depth=10, width=W, truth_decoder=True,
                             decoder_channels=8)
    image = torch.randn(2, image_channels, *size)
    masks = torch.rand(2, k, *size, requires_grad=True)
    dice, truth_logits = model(image, masks, return_truth=True)
    assert dice.shape == (2, k) and truth_logits.shape == (2, k, *size)
    assert torch.all((dice >= 0) & (dice <= 1))
    # the plain call returns the same Dice (eval mode: deterministic)
    model.eval()
    torch.testing.assert_close(model(image, masks), model(image, masks, return_truth=True)[0])
    # QAR needs the gradient w.r.t. the masks; it reaches them through both the encoder and the prior
    (1 - model(image, masks)).mean().backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0


def test_fused_readout_prior_is_soft_dice_of_mask_and_predicted_truth() -> None:
    """With a zero head the fused Dice equals the soft Dice of the mask and the decoded truth."""
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 1, depth=10, width=W, truth_decoder=True, decoder_channels=8).eval()
    with torch.no_grad():
        model.head[1].weight.zero_()
        model.head[1].bias.zero_()
    image, masks = torch.randn(3, 1, 32, 32), (torch.rand(3, 1, 32, 32) > 0.5).float()
    dice, truth_logits = model(image, masks, return_truth=True)
    expected = soft_dice(masks, torch.sigmoid(truth_logits)).clamp(1e-4, 1 - 1e-4)
    torch.testing.assert_close(dice, expected)


def test_soft_dice_identities() -> None:
    a = torch.zeros(2, 1, 8, 8)
    a[:, :, 2:6, 2:6] = 1
    b = torch.zeros_like(a)
    b[:, :, 6:, 6:] = 1
    assert soft_dice(a, a).allclose(torch.ones(2, 1), atol=1e-6)
    assert (soft_dice(a, b) < 0.1).all()
    assert soft_dice(torch.zeros_like(a), torch.zeros_like(a)).allclose(torch.ones(2, 1))  # both empty agree


def test_return_truth_needs_decoder_and_config_round_trip() -> None:
    plain = QualityPredictor(2, 1, 1, depth=10, width=W)
    with pytest.raises(ValueError, match="truth_decoder"):
        plain(torch.randn(1, 1, 32, 32), torch.rand(1, 1, 32, 32), return_truth=True)
    model = QualityPredictor(2, 1, 2, depth=10, width=W, truth_decoder=True, decoder_channels=8)
    clone = QualityPredictor.from_config(json.loads(json.dumps(model.config())))
    assert clone.truth_decoder and clone.decoder_channels == 8
    clone.load_state_dict(model.state_dict())  # same parameters, decoder included


def test_agreement_readout_is_dice_with_thresholded_truth_and_differentiable() -> None:
    from qgseg.quality.corruptions import dice_per_class

    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 2, depth=10, width=W, truth_decoder=True, decoder_channels=8,
                             readout="agreement").eval()
    image = torch.randn(3, 1, 32, 32)
    masks = (torch.rand(3, 2, 32, 32) > 0.5).float().requires_grad_(True)
    dice = model(image, masks)
    _, truth_logits = model(image, masks, return_truth=True)
    expected = dice_per_class(masks.detach(), (truth_logits > 0).float())
    torch.testing.assert_close(dice, expected)
    (1 - dice).mean().backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    # the straight-through threshold passes gradient to the decoder as well
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    # both empty -> 1, like the training target
    empty = torch.zeros(1, 2, 32, 32)
    assert agreement_dice(empty, torch.full((1, 2, 32, 32), -5.0)).allclose(torch.ones(1, 2))
    with pytest.raises(ValueError, match="truth_decoder"):
        QualityPredictor(2, 1, 1, width=W, readout="agreement")


def test_return_readouts_gives_every_readout_of_one_pass() -> None:
    torch.manual_seed(0)
    model = QualityPredictor(2, 1, 2, depth=10, width=8, truth_decoder=True).eval()
    image, masks = torch.randn(3, 1, 32, 32), torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        readouts = model(image, masks, return_readouts=True)
        assert set(readouts) == {"fused", "agreement"}
        for name in ("fused", "agreement"):
            model.readout = name
            torch.testing.assert_close(readouts[name], model(image, masks))
    plain = QualityPredictor(2, 1, 2, depth=10, width=8).eval()
    with torch.no_grad():
        assert set(plain(image, masks, return_readouts=True)) == {"fused"}
