"""The resnet-unet segmenter (MONAI FlexibleUNet) and starting its encoder from local weights."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_config, tiny_dataset
from monai.networks.nets import ResNet

from qgseg.cli.main import main
from qgseg.config import ConfigError
from qgseg.models import SEGMENTERS, build_model
from qgseg.models.factory import resnet_unet_backbone
from qgseg.quality.pretrain import pretrain_encoder

FEATURES = [4, 8, 8, 16, 16]  # decoder widths (reversed): a small decoder, the encoder is a standard ResNet


def resnet(channels: int = 1, widths=(64, 128, 256, 512), fc: bool = False) -> ResNet:
    """A ResNet-18 laid out like ``qgseg quality pretrain`` output (type-B shortcuts), or torchvision's with ``fc``."""
    return ResNet("basic", [2, 2, 2, 2], list(widths), spatial_dims=2, n_input_channels=channels,
                  shortcut_type="B", bias_downsample=False, feed_forward=fc, num_classes=10)


def save(net: ResNet, path, wrap: bool = True):
    torch.save({"state_dict": net.state_dict()} if wrap else net.state_dict(), path)
    return path


def test_resnet_unet_builds_and_runs():
    assert "resnet-unet" in SEGMENTERS
    assert [resnet_unet_backbone(n) for n in ("resnet-unet", "flexible-unet", "FlexibleUNet", "resnet50-unet",
                                              "unet")] == ["resnet18", "resnet18", "resnet18", "resnet50", None]
    model = build_model("resnet-unet", 2, in_channels=1, num_classes=3, features=FEATURES).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="depth must be one of 10, 18"):
        build_model("resnet7-unet", 2, 1, 2, features=FEATURES)
    with pytest.raises(ValueError, match="5 feature widths"):
        build_model("resnet-unet", 2, 1, 2, features=[8, 16, 32])


def test_image_size_must_be_a_multiple_of_32(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        tiny_config(tmp_path, tmp_path, model__name="resnet-unet", data__image_size="[48,48]")


def test_encoder_file_loads_and_reports(tmp_path, capsys):
    src = resnet()
    path = save(src, tmp_path / "encoder.pt")
    model = build_model("resnet-unet", 2, 1, 2, features=FEATURES, pretrained=path)
    assert torch.equal(model.encoder.conv1.weight, src.conv1.weight)
    assert torch.equal(model.encoder.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    assert torch.equal(model.encoder.bn1.running_var, src.bn1.running_var)
    out = capsys.readouterr().out
    # MONAI's FlexibleUNet resnet18 uses parameter-free type-A shortcuts: the file's projections are unused.
    assert "102/102 resnet18 encoder tensors loaded" in out and "18 file tensors unused: downsample.*" in out


def test_first_conv_adapts_to_the_channel_count(tmp_path):
    grey = resnet(1)
    model = build_model("resnet-unet", 2, 3, 2, features=FEATURES, pretrained=save(grey, tmp_path / "g.pt"))
    assert torch.allclose(model.encoder.conv1.weight, grey.conv1.weight.repeat(1, 3, 1, 1) / 3)
    rgb = resnet(3)
    model = build_model("resnet-unet", 2, 1, 2, features=FEATURES, pretrained=save(rgb, tmp_path / "c.pt"))
    assert torch.allclose(model.encoder.conv1.weight, rgb.conv1.weight[:, :1] * 3)
    assert torch.equal(model.encoder.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


def test_mismatching_encoder_files_fail_with_the_reason(tmp_path):
    half = save(resnet(widths=(32, 64, 128, 256)), tmp_path / "half.pt")  # the predictor presets' width
    with pytest.raises(ValueError, match=r"half\.pt: .*encoder widths 32\.\.256 vs 64\.\.512.*quality\.width=null"):
        build_model("resnet-unet", 2, 1, 2, features=FEATURES, pretrained=half)
    r18 = save(resnet(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="holds a resnet18 encoder, the network a resnet34: use model.name=resnet18"):
        build_model("resnet34-unet", 2, 1, 2, features=FEATURES, pretrained=r18)
    with pytest.raises(ValueError, match="2D kernels in the file, the network is 3D"):
        build_model("resnet-unet", 3, 1, 2, features=FEATURES, pretrained=r18)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model("resnet-unet", 2, 1, 2, features=FEATURES, pretrained=tmp_path / "missing.pt")


def test_torchvision_layout_and_whole_network_files(tmp_path, capsys):
    tv = resnet(3, fc=True)  # torchvision key names: conv1.weight, layer1.0.conv1.weight, downsample.0, fc.*
    assert {"conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"} <= set(tv.state_dict())
    model = build_model("resnet-unet", 2, 3, 4, features=FEATURES, pretrained=save(tv, tmp_path / "r18.pth", False))
    assert torch.equal(model.encoder.layer4[1].conv1.weight, tv.layer4[1].conv1.weight)
    assert "unused: downsample.*, fc.*" in capsys.readouterr().out
    # A whole resnet-unet state dict (today's model.pretrained): every tensor but the other-sized head loads.
    torch.save(model.state_dict(), tmp_path / "whole.pt")
    other = build_model("resnet-unet", 2, 3, 2, features=FEATURES, pretrained=tmp_path / "whole.pt")
    assert torch.equal(other.decoder.blocks[0].convs.conv_0.conv.weight, model.decoder.blocks[0].convs.conv_0.conv.weight)
    assert "170/172 tensors loaded" in capsys.readouterr().out


def test_train_starts_from_a_pretrained_encoder(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", n_labeled=4, n_unlabeled=2, n_val=2, n_test=1)
    cfg = tiny_config(data, tmp_path / "runs", quality__width="null", quality__depth=18,
                      quality__pretrain__batch_size=2)
    encoder = tmp_path / "pretrain" / "encoder.pt"
    pretrain_encoder(cfg, encoder, steps=1, progress=False)
    args = ["train", "demo", "--set", f"data.dataset={data}", "--set", "data.image_size=[32,32]",
            "--set", "model.name=resnet-unet", "--set", f"model.pretrained={encoder}",
            "--set", f"model.features={FEATURES}".replace(" ", ""), "--set", "train.batch_size=2",
            "--set", "train.iterations=2", "--set", "train.val_every=2", "--set", "runtime.progress=false",
            "--set", "runtime.accelerator=cpu", "--output-dir", str(tmp_path / "runs"), "--no-eval"]
    assert main(args) == 0
    assert f"pretrained {encoder}: 102/102 resnet18 encoder tensors loaded" in capsys.readouterr().out
    # The run's own checkpoint is a whole-network file: it loads whole, not as an encoder.
    (best,) = (tmp_path / "runs").rglob("best.ckpt")
    build_model("resnet-unet", 2, 1, 2, features=FEATURES, pretrained=best)
    assert "172/172 tensors loaded" in capsys.readouterr().out
