"""Local weight files: reading them, and starting a network's ResNet encoder from them.

Shared by the quality predictor (``quality.pretrained``) and the segmenters (``model.pretrained``).
Nothing is ever downloaded; ``.pt/.pth/.ckpt`` files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["adapt_first_conv", "load_resnet_encoder", "read_state_dict", "resnet_layout"]

#: Checkpoint containers unwrapped by :func:`read_state_dict` ({"state_dict": ...} from Lightning/MedicalNet, ...).
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")
#: Wrapper prefixes stripped by :func:`read_state_dict` (DataParallel, predictor backbones, segmenter encoders).
PREFIXES = ("module.", "backbone.", "model.", "encoder.")


def read_state_dict(path: Path, strip_prefixes: bool = True) -> dict[str, torch.Tensor]:
    """Read tensors from a local ``.safetensors`` or ``.pt/.pth`` file (never downloads).

    Args:
        path: the weight file.
        strip_prefixes: strip :data:`PREFIXES`, repeatedly ("module.backbone.conv1.weight" ->
            "conv1.weight"); ``False`` keeps the names of a whole-network state dict as they are.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in CONTAINER_KEYS:
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")  # noqa: TRY004 - a bad file
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        stripped = strip_prefixes
        while stripped:
            stripped = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, stripped = k[len(p):], True
        out[k] = v
    return out


def adapt_first_conv(src: torch.Tensor, dst_shape: torch.Size, image_channels: int | None) -> torch.Tensor | None:
    """Map a stem kernel ``(O, Cs, *k)`` to ``(O, Ct, *k)``; ``None`` if it cannot be done sensibly.

    - If the model's image channels equal ``Cs`` (e.g. RGB weights, RGB image + masks): the image
      channels keep the pretrained kernel exactly and each mask channel gets the channel-mean kernel
      (a neutral "grey" filter), so image features start identical to the pretrained ones.
    - Otherwise the kernel is tiled/truncated over ``Ct`` channels and scaled by ``Cs / Ct`` so the
      expected activation magnitude is preserved (as timm's ``adapt_input_conv`` does).
    """
    if src.ndim != len(dst_shape) or src.shape[0] != dst_shape[0] or src.shape[2:] != dst_shape[2:]:
        return None  # different out-channels, kernel size or spatial dims: no meaningful mapping
    cs, ct = src.shape[1], dst_shape[1]
    src = src.float()
    if image_channels == cs and ct > cs:
        mean = src.mean(dim=1, keepdim=True)
        return torch.cat([src, mean.expand(-1, ct - cs, *src.shape[2:])], dim=1)
    reps = math.ceil(ct / cs)
    tiled = src.repeat(1, reps, *([1] * (src.ndim - 2)))[:, :ct]
    return tiled * (cs / ct)


def resnet_layout(state: Mapping[str, torch.Tensor]) -> tuple[str, list[int], list[int]] | None:
    """``(block type, blocks per stage, stage widths)`` of a ResNet state dict with torchvision/MONAI
    key names (``layer1.0.conv1.weight``, ...); ``None`` when it holds no ResNet stage."""
    blocks = [len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.") and k.endswith(".conv1.weight")})
              for i in range(1, 5)]
    if not all(blocks):
        return None
    widths = [int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
    return ("bottleneck" if "layer1.0.conv3.weight" in state else "basic"), blocks, widths


def _resnet_name(block: str, blocks: list[int]) -> str:
    """``resnet18`` etc. for a MONAI layout, else a description of it."""
    from monai.networks.nets.resnet import resnet_params

    for name, (b, layers, *_) in resnet_params.items():
        if (b, list(layers)) == (block, blocks):
            return name
    return f"a ResNet with {block} blocks {blocks}"


def _encoder_mismatch(src: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], arch: str) -> str | None:
    """Why the ResNet in ``src`` cannot start the ``arch`` encoder ``own``; ``None`` when it can."""
    theirs, mine = resnet_layout(src), resnet_layout(own)
    if theirs is None or mine is None:
        return "no ResNet encoder tensors (conv1.*, layer1..4.*) in the file"
    dims, own_dims = src["layer1.0.conv1.weight"].ndim - 2, own["layer1.0.conv1.weight"].ndim - 2
    if dims != own_dims:
        return f"{dims}D kernels in the file, the network is {own_dims}D"
    (block, blocks, widths), (own_block, own_blocks, own_widths) = theirs, mine
    if widths != own_widths:
        return (f"encoder widths {widths[0]}..{widths[-1]} vs {own_widths[0]}..{own_widths[-1]} of {arch}: "
                f"pretrain with --set quality.width=null to start a resnet-unet from it")
    if (block, blocks) != (own_block, own_blocks):
        found = _resnet_name(block, blocks)
        hint = f"use model.name={found}-unet" if found.startswith("resnet") else "use a matching depth"
        return f"the file holds a {found} encoder, the network a {arch}: {hint}"
    return None


def load_resnet_encoder(encoder: nn.Module, path: str | Path, arch: str = "resnet") -> tuple[int, int, list[str]]:
    """Initialise a MONAI ResNet ``encoder`` (e.g. ``FlexibleUNet.encoder``) from a LOCAL file.

    The file may hold a ``qgseg quality pretrain`` encoder, a torchvision/MONAI ResNet (ImageNet,
    RadImageNet, MedicalNet) or a quality predictor's backbone; loading is that of
    :func:`~qgseg.quality.predictor.load_pretrained_backbone` (``fc`` skipped, the first conv
    adapted to another channel count). Unlike it, the file must hold the encoder's layout: a file
    for other widths, depth or spatial dims raises instead of loading only the stem.

    Returns:
        ``(loaded, total, unused)``: encoder tensors loaded, encoder tensors in all, and the file's
        tensors that have no place in the encoder (e.g. ``fc.*``; the ``downsample.*`` projections
        of a type-"B" shortcut when the encoder uses MONAI's parameter-free type-"A" shortcut).

    Raises:
        FileNotFoundError: no such file. ValueError: the file cannot start this encoder (the reason).
    """
    # why imported here: the predictor imports this module
    from ..quality.predictor import load_pretrained_backbone

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found (downloads are never attempted)")
    own = encoder.state_dict()
    reason = _encoder_mismatch(read_state_dict(path), own, arch)
    if reason:
        raise ValueError(f"{path}: cannot start the {arch} encoder: {reason}")
    not_loaded = set(load_pretrained_backbone(encoder, path))
    missing = [k for k in own if k in not_loaded]
    return len(own) - len(missing), len(own), sorted(not_loaded - set(own))
