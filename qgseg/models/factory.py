"""One factory for every segmentation network, all built from MONAI."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

SEGMENTERS = ("unet", "unet++", "attention-unet", "swin-unetr", "segresnet")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_segmenter(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    features: Sequence[int] = (16, 32, 64, 128, 256),
    dropout: float = 0.0,
) -> nn.Module:
    """Build a MONAI segmentation network that outputs ``num_classes`` logits per pixel.

    ``features`` are the channel widths per resolution level (their count sets the depth
    for unet / attention-unet; unet++ takes exactly 5 and adds an upsampling width; swin-unetr
    and segresnet take the first entry as their base width).
    """
    from monai.networks import nets

    features = list(features)
    key = name.lower().replace("_", "-")
    if key == "unet":
        return nets.UNet(spatial_dims, in_channels, num_classes, channels=features,
                         strides=[2] * (len(features) - 1), num_res_units=2, dropout=dropout)
    if key in ("unet++", "unetplusplus", "basicunetplusplus"):
        if len(features) == 5:
            features = features + [features[0]]
        if len(features) != 6:
            raise ValueError(f"unet++ needs 5 feature widths, got {features}")
        return nets.BasicUNetPlusPlus(spatial_dims, in_channels, num_classes, features=features, dropout=dropout)
    if key in ("attention-unet", "attentionunet", "attunet"):
        return nets.AttentionUnet(spatial_dims, in_channels, num_classes, channels=features,
                                  strides=[2] * (len(features) - 1), dropout=dropout)
    if key in ("swin-unetr", "swinunetr"):
        # feature_size must be divisible by 12 (3 heads in the first stage x 4).
        feature_size = max(12, (features[0] // 12) * 12)
        return nets.SwinUNETR(in_channels=in_channels, out_channels=num_classes, feature_size=feature_size,
                              spatial_dims=spatial_dims, drop_rate=dropout)
    if key == "segresnet":
        return nets.SegResNet(spatial_dims=spatial_dims, init_filters=features[0], in_channels=in_channels,
                              out_channels=num_classes, dropout_prob=dropout or None)
    raise ValueError(f"unknown network '{name}'; choose one of {', '.join(SEGMENTERS)}")


class _UNetPlusPlusLogits(nn.Module):
    """BasicUNetPlusPlus returns a list (deep supervision); expose the final logits only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def build_model(name: str, spatial_dims: int, in_channels: int, num_classes: int,
                features: Sequence[int] = (16, 32, 64, 128, 256), dropout: float = 0.0,
                pretrained: str | Path | None = None) -> nn.Module:
    """:func:`build_segmenter` returning plain logits, optionally initialised from a local file."""
    from monai.networks import nets

    net = build_segmenter(name, spatial_dims, in_channels, num_classes, features, dropout)
    if isinstance(net, nets.BasicUNetPlusPlus):
        net = _UNetPlusPlusLogits(net)
    if pretrained:
        load_local_weights(net, pretrained)
    return net


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load matching tensors from a local ``.pt/.pth/.ckpt`` or ``.safetensors`` file.

    Keys whose shapes differ (e.g. a first conv for another channel count, the output head)
    are skipped and returned, so pretraining on other data can still initialise the body.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the model (different architecture?)")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
