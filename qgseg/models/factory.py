"""One factory for every segmentation network, all built from MONAI."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..config import RESNET_UNET
from .weights import load_resnet_encoder, read_state_dict

SEGMENTERS = ("unet", "unet++", "attention-unet", "swin-unetr", "segresnet", "resnet-unet")
#: ``resnet-unet`` (aliases ``flexible-unet``, ``flexibleunet``) is MONAI's FlexibleUNet on a ResNet-18;
#: ``resnet<depth>-unet`` picks another of MONAI's ResNet encoders (10, 34, 50, 101, 152, 200).


def resnet_unet_backbone(name: str) -> str | None:
    """MONAI backbone name (``resnet18``...) of a resnet-unet network name, ``None`` for other networks."""
    match = RESNET_UNET.fullmatch(name.lower().replace("_", "-"))
    return f"resnet{match.group(1) or 18}" if match else None


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
    and segresnet take the first entry as their base width; resnet-unet takes 5, reversed, as its
    decoder widths: its encoder is a standard-width MONAI ResNet, see :func:`resnet_unet_backbone`).
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
    backbone = resnet_unet_backbone(key)
    if backbone is not None:
        from monai.networks.nets.resnet import ResNetEncoder

        if backbone not in ResNetEncoder.backbone_names:
            raise ValueError(f"unknown network '{name}': the ResNet depth must be one of "
                             f"{', '.join(n[6:] for n in ResNetEncoder.backbone_names)}")
        if len(features) != 5:
            raise ValueError(f"resnet-unet needs 5 feature widths (decoder, coarse to fine reversed), got {features}")
        return nets.FlexibleUNet(in_channels, num_classes, backbone=backbone, pretrained=False,
                                 decoder_channels=tuple(reversed(features)), spatial_dims=spatial_dims,
                                 dropout=dropout)
    raise ValueError(f"unknown network '{name}'; choose one of {', '.join(SEGMENTERS)} (or resnet<depth>-unet)")


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
        from lightning_fabric.utilities.rank_zero import rank_zero_only

        # why rank 0 only: under DDP every rank builds the network; one line is the account, not one per rank
        rank_zero_only(print)(load_pretrained(net, pretrained))
    return net


def load_pretrained(model: nn.Module, path: str | Path) -> str:
    """Initialise ``model`` from a local weight file; returns a one-line account of what loaded.

    A resnet-unet (MONAI ``FlexibleUNet``) takes a whole-network state dict (keys ``decoder.*``:
    :func:`load_local_weights`) or a ResNet encoder alone (``qgseg quality pretrain`` output,
    torchvision/MONAI ResNets: :func:`~qgseg.models.weights.load_resnet_encoder`); other networks
    take whole-network state dicts.
    """
    from monai.networks import nets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found (downloads are never attempted)")
    if isinstance(model, nets.FlexibleUNet) and not any(
            k.startswith(("decoder.", "segmentation_head.")) for k in read_state_dict(path, strip_prefixes=False)):
        loaded, total, unused = load_resnet_encoder(model.encoder, path, model.backbone)
        return (f"pretrained {path}: {loaded}/{total} {model.backbone} encoder tensors loaded"
                + (f"; {len(unused)} file tensors unused: {_summarise(unused, model.backbone)}" if unused else ""))
    skipped = load_local_weights(model, path)
    total = len(model.state_dict())
    return f"pretrained {path}: {total - len(skipped)}/{total} tensors loaded"


def _summarise(keys: list[str], arch: str) -> str:
    """``downsample.*, fc.*`` for unused ResNet keys, saying why shortcut projections have no place."""
    names = sorted({re.sub(r"^layer\d\.\d+\.", "", k).split(".")[0] + ".*" for k in keys})
    why = f" (MONAI's {arch} encoder has parameter-free type-A shortcuts)" if "downsample.*" in names else ""
    return ", ".join(names) + why


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load matching tensors from a local ``.pt/.pth/.ckpt`` or ``.safetensors`` file.

    Keys whose shapes differ (e.g. a first conv for another channel count, the output head)
    are skipped and returned, so pretraining on other data can still initialise the body.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found")
    state = read_state_dict(path, strip_prefixes=False)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the model (different architecture?)")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
