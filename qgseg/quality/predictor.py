"""Quality predictor g(image, mask) -> predicted Dice per foreground class.

The network is a MONAI ``ResNet`` whose input is the image channels concatenated with one
(possibly soft) mask channel per foreground class; a small head maps the pooled features to
``num_fg_classes`` outputs squashed to [0, 1] by a sigmoid. Everything stays differentiable
w.r.t. the mask channels, because the quality-aware regularisation (QAR) loss back-propagates
through ``g`` into the segmenter that produced the masks.

Optionally (``truth_decoder=True``) a light FPN decoder on the ResNet stages predicts the TRUE
mask from (image, mask). Training it with a dense loss gives the encoder one target per pixel
instead of one number per image, which matters with a few dozen labeled images; the soft Dice
between the input mask and the predicted truth is added, on the logit scale, to the head's
score, so the head only learns a correction of that estimate.

``backbone`` swaps the ResNet for MONAI's ``DenseNet121`` or ``EfficientNetBN("efficientnet-b0")``
(the paper's third axis; the published method used ResNets). Those keep the plain regression
head (global pool -> dropout -> linear -> sigmoid); the truth-map decoder needs the ResNet stages.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, EfficientNetBN, ResNet

from ..config import QUALITY_BACKBONES
from .corruptions import dice_per_class  # the training target's Dice: both conventions must agree
from .roi import check_roi_params, mask_roi_theta, roi_crop, roi_uncrop

__all__ = [
    "QualityPredictor",
    "TruthMapDecoder",
    "RESNET_LAYOUTS",
    "QUALITY_BACKBONES",
    "backbone_label",
    "soft_dice",
    "agreement_dice",
    "labels_to_fg_onehot",
    "probs_to_fg",
    "load_pretrained_backbone",
]

logger = logging.getLogger(__name__)

#: depth -> (MONAI block type, blocks per stage). Same layouts as ``monai.networks.nets.resnetXX``.
RESNET_LAYOUTS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}


#: First convolution of each backbone: the tensor whose input channels a pretrained file may need adapted.
FIRST_CONV = {"resnet": "conv1.weight", "densenet121": "features.conv0.weight", "efficientnet-b0": "_conv_stem.weight"}


def backbone_label(backbone: str, depth: int) -> str:
    """Readable name of a predictor backbone for summaries: ``ResNet-18``, ``densenet121``, ..."""
    return f"ResNet-{depth}" if backbone == "resnet" else backbone


# --------------------------------------------------------------------------- mask helpers
def labels_to_fg_onehot(label: torch.Tensor, num_classes: int, has_channel: bool = False) -> torch.Tensor:
    """Integer label map -> one-hot foreground channels.

    Args:
        label: ``(B, *spatial)`` integer labels in ``[0, num_classes)``; with ``has_channel=True``
            a singleton channel ``(B, 1, *spatial)`` (MONAI's usual layout) is accepted instead.
        num_classes: number of classes *including* background (label 0).

    Returns:
        ``(B, num_classes - 1, *spatial)`` float tensor; the background channel is dropped because
        the predictor only scores foreground classes.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + foreground), got {num_classes}")
    if has_channel:
        if label.ndim < 2 or label.shape[1] != 1:
            raise ValueError(f"has_channel=True expects (B, 1, *spatial), got {tuple(label.shape)}")
        label = label[:, 0]
    if label.is_floating_point():
        # Labels often arrive as float tensors from image loaders; round rather than truncate.
        label = label.round()
    onehot = F.one_hot(label.long(), num_classes)  # (B, *spatial, C)
    return onehot.movedim(-1, 1)[:, 1:].to(torch.get_default_dtype())


def probs_to_fg(probs: torch.Tensor) -> torch.Tensor:
    """Drop the background channel of ``(B, C, *spatial)`` class probabilities -> ``(B, C-1, *spatial)``.

    Slicing (rather than e.g. argmax) keeps the result differentiable w.r.t. ``probs``.
    """
    if probs.ndim < 3 or probs.shape[1] < 2:
        raise ValueError(f"expected (B, C>=2, *spatial) probabilities, got {tuple(probs.shape)}")
    return probs[:, 1:]


# --------------------------------------------------------------------------- network
def _block_inplanes(width: int | Sequence[int] | None) -> list[int]:
    """Per-stage widths: ``None`` -> standard [64,128,256,512]; int ``w`` -> [w, 2w, 4w, 8w]."""
    if width is None:
        return [64, 128, 256, 512]
    if isinstance(width, int):
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        return [width, 2 * width, 4 * width, 8 * width]
    planes = [int(w) for w in width]
    if len(planes) != 4 or min(planes) < 1:
        raise ValueError(f"width as a sequence needs 4 positive stage widths, got {width}")
    return planes


def resnet_stages(backbone: ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The four stage outputs of a MONAI ``ResNet`` (its ``forward`` unrolled to expose them)."""
    b = backbone
    x = b.act(b.bn1(b.conv1(x)))
    if not b.no_max_pool:
        x = b.maxpool(x)
    stages = []
    for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
        x = layer(x)
        stages.append(x)
    return stages


def monai_classifier_backbone(name: str, spatial_dims: int, in_channels: int, no_max_pool: bool = False,
                              norm: str | tuple = "batch") -> tuple[nn.Module, int]:
    """A non-ResNet MONAI classifier whose ``forward`` returns pooled features ``(B, C)``, and ``C``.

    The classifier's final linear layer (and EfficientNet's own dropout) become identities so the
    predictor's head (dropout + K outputs) is the same for every backbone. ``no_max_pool`` drops
    DenseNet's stem pooling, as for the ResNet, to keep resolution on small inputs.
    """
    if name == "densenet121":
        net = DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, norm=norm)
        feat = net.class_layers.out.in_features
        net.class_layers.out = nn.Identity()
        if no_max_pool:
            net.features.pool0 = nn.Identity()
        return net, feat
    if name == "efficientnet-b0":
        net = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels,
                             num_classes=1, norm=norm)
        feat = net._fc.in_features
        net._fc, net._dropout = nn.Identity(), nn.Identity()
        return net, feat
    raise ValueError(f"backbone must be one of {list(QUALITY_BACKBONES)}, got {name!r}")


class TruthMapDecoder(nn.Module):
    """FPN-style decoder: ResNet stage features -> truth-mask logits ``(B, K, *input_size)``.

    Top-down path over the four stages (1x1 laterals, upsample-and-add), then a full-resolution
    refinement that also sees the raw input (image + masks), because boundary placement at the
    stem's 1/4 resolution is too coarse to rank masks whose Dice differs by a few points.
    """

    def __init__(self, spatial_dims: int, stage_channels: Sequence[int], in_channels: int, out_channels: int,
                 channels: int = 64, refine_channels: int = 16) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.lateral = nn.ModuleList([conv(c, channels, 1) for c in stage_channels])
        # why: squeeze to refine_channels BEFORE upsampling; full-resolution convs dominate the cost.
        self.fuse = nn.Sequential(conv(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  conv(channels, refine_channels, 1), nn.ReLU(inplace=True))
        self.refine = nn.Sequential(
            conv(refine_channels + in_channels, refine_channels, 3, padding=1), nn.ReLU(inplace=True),
            conv(refine_channels, out_channels, 1),
        )

    def forward(self, stages: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        y = self.lateral[-1](stages[-1])
        for lat, feat in zip(reversed(self.lateral[:-1]), reversed(stages[:-1]), strict=True):
            y = F.interpolate(y, size=feat.shape[2:], mode=self.mode, align_corners=False) + lat(feat)
        y = F.interpolate(self.fuse(y), size=x.shape[2:], mode=self.mode, align_corners=False)
        return self.refine(torch.cat([y, x], dim=1))


def soft_dice(masks: torch.Tensor, probs: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice per sample and channel, ``(B, K)``; ``smooth`` (in pixels) makes two empty maps agree."""
    dims = tuple(range(2, masks.ndim))
    inter = (masks * probs).sum(dims)
    return (2 * inter + smooth) / (masks.sum(dims) + probs.sum(dims) + smooth)


def agreement_dice(masks: torch.Tensor, truth_logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Dice ``(B, K)`` between (possibly soft) masks and the thresholded predicted truth.

    Same convention as the training target (both empty -> 1). The threshold uses a straight-through
    estimator: the value is that of the hard map, the gradient that of the sigmoid, so the
    score stays differentiable w.r.t. the masks AND the decoder (QAR back-propagates through it).
    """
    soft = torch.sigmoid(truth_logits)
    truth = (soft > 0.5).to(soft.dtype) + soft - soft.detach()
    return dice_per_class(masks, truth, eps)


class QualityPredictor(nn.Module):
    """Predicts the Dice of each foreground-class mask given the image: ``g(image, masks) -> (B, K)``.

    Args:
        spatial_dims: 2 or 3.
        image_channels: number of image channels (e.g. 1 for CT/MR, 3 for RGB).
        num_fg_classes: K, number of foreground classes (one mask channel and one output each).
        backbone: ``"resnet"`` (depth/width below), ``"densenet121"`` or ``"efficientnet-b0"`` (MONAI's
            networks at their standard sizes; ``width``, the stem options and the decoder are ResNet-only,
            ``no_max_pool`` and ``norm`` also apply to DenseNet, ``norm`` to EfficientNet).
        depth: ResNet depth, one of 10/18/34/50.
        width: ``None`` for standard widths, an int ``w`` for stage widths ``[w, 2w, 4w, 8w]``
            (small values make CPU tests/training cheap), or four explicit stage widths.
        dropout: dropout before the final linear layer.
        conv1_t_size: stem kernel size. Default 7 as in the torchvision/MedicalNet ResNets.
        conv1_t_stride: stem stride. MONAI defaults to 1, which makes 224^2 inputs needlessly
            expensive; 2 (plus max-pool) matches the standard ImageNet stem and pretrained weights.
        no_max_pool: skip the stem max-pool (useful for small inputs).
        shortcut_type: "B" (1x1 conv projection) by default. MONAI's type "A" shortcut concatenates
            ``out.data`` and therefore detaches gradient along the shortcut, which we do not want
            for a network that QAR back-propagates through; "B" also matches torchvision keys.
        norm: MONAI norm spec for the backbone ("batch", "instance", ("group", {...}), ...).
        truth_decoder: add a :class:`TruthMapDecoder` that predicts the true mask; its soft Dice
            with the input mask becomes the prior of the predicted Dice (see module docstring).
            Train it with ``forward(..., return_truth=True)`` and a dense loss on the truth.
        decoder_channels: width of that decoder.
        readout: what ``forward`` returns for decoder models. ``"fused"``: the regression head
            (decoder prior + correction from pooled features). ``"agreement"``: the Dice between the
            input mask and the decoder's thresholded truth map (:func:`agreement_dice`), skipping
            the globally pooled head. Which one generalises better depends on the data, so
            training (``quality.readout: auto``) picks it on validation MAE.
        roi_size: when set, the network sees a mask-centred crop resampled to this size instead
            of the whole input (see :mod:`qgseg.quality.roi`): small structures get more pixels.
            Inputs may then be of any size; truth logits are in the crop frame
            (:meth:`input_view` / :meth:`source_view` convert).
        roi_margin, roi_min_fraction: context around the mask and the smallest box side, as
            fractions of the mask extent and of the image side.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_channels: int,
        num_fg_classes: int,
        backbone: str = "resnet",
        depth: int = 18,
        width: int | Sequence[int] | None = None,
        dropout: float = 0.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 2,
        no_max_pool: bool = False,
        shortcut_type: str = "B",
        norm: str | tuple = "batch",
        truth_decoder: bool = False,
        decoder_channels: int = 64,
        readout: str = "fused",
        roi_size: Sequence[int] | None = None,
        roi_margin: float = 0.5,
        roi_min_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if backbone not in QUALITY_BACKBONES:
            raise ValueError(f"backbone must be one of {list(QUALITY_BACKBONES)}, got {backbone!r}")
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        if backbone != "resnet" and truth_decoder:
            raise ValueError("the truth-map decoder needs a ResNet backbone; set quality.truth_map_weight=0")
        if backbone != "resnet" and width is not None:
            raise ValueError(f"width sets ResNet stage widths; the {backbone} backbone has its standard widths")
        if image_channels < 1 or num_fg_classes < 1:
            raise ValueError("image_channels and num_fg_classes must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.spatial_dims = spatial_dims
        self.image_channels = image_channels
        self.num_fg_classes = num_fg_classes
        self.backbone_name = backbone
        self.depth = depth
        self.width = width if width is None or isinstance(width, int) else [int(w) for w in width]
        self.dropout = float(dropout)
        self.conv1_t_size = conv1_t_size
        self.conv1_t_stride = conv1_t_stride
        self.no_max_pool = no_max_pool
        self.shortcut_type = shortcut_type
        self.norm = norm
        self.truth_decoder = bool(truth_decoder)
        self.decoder_channels = int(decoder_channels)
        if readout not in ("fused", "agreement"):
            raise ValueError(f"readout must be 'fused' or 'agreement', got {readout!r}")
        if readout == "agreement" and not truth_decoder:
            raise ValueError("readout='agreement' needs truth_decoder=True")
        self.readout = readout
        if roi_size is not None and len(roi_size) != spatial_dims:
            raise ValueError(f"roi_size needs {spatial_dims} sizes, got {roi_size}")
        check_roi_params(roi_margin, roi_min_fraction)
        self.roi_size = None if roi_size is None else [int(v) for v in roi_size]
        self.roi_margin = float(roi_margin)
        self.roi_min_fraction = float(roi_min_fraction)

        self.decoder: TruthMapDecoder | None = None
        if backbone != "resnet":
            self.backbone, feat = monai_classifier_backbone(backbone, spatial_dims, self.in_channels, no_max_pool, norm)
        else:
            block, layers = RESNET_LAYOUTS[depth]
            planes = _block_inplanes(width)
            self.backbone = ResNet(
                block=block,
                layers=layers,
                block_inplanes=planes,
                spatial_dims=spatial_dims,
                n_input_channels=self.in_channels,
                conv1_t_size=conv1_t_size,
                conv1_t_stride=conv1_t_stride,
                no_max_pool=no_max_pool,
                shortcut_type=shortcut_type,
                bias_downsample=False,  # torchvision layout: projection conv without bias
                feed_forward=False,  # our own head below (dropout + K outputs)
                norm=norm,
            )
            expansion = 4 if block == "bottleneck" else 1
            feat = planes[3] * expansion
        self.head = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(feat, num_fg_classes))
        if self.truth_decoder:  # ResNet only (checked above)
            self.decoder = TruthMapDecoder(spatial_dims, [c * expansion for c in planes], self.in_channels,
                                           num_fg_classes, channels=self.decoder_channels)
            # Weight of the decoder's Dice estimate on the logit scale; starts as the full prior.
            self.prior_weight = nn.Parameter(torch.ones(num_fg_classes))

    @property
    def in_channels(self) -> int:
        """Channels of the concatenated input: image + one mask per foreground class."""
        return self.image_channels + self.num_fg_classes

    # ---------------------------------------------------------------- forward passes
    @property
    def min_input_size(self) -> int:
        """Smallest spatial side the backbone accepts (measured: EfficientNet-B0's 5x5 kernels at 1/16
        and DenseNet's three 2x pooling transitions after its stem; the ResNet pads its way through)."""
        if self.backbone_name == "efficientnet-b0":
            return 32
        if self.backbone_name == "densenet121":
            return 16 if self.no_max_pool else 32
        return 1

    def _check_concat(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, <{self.spatial_dims} spatial dims>), got {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"the {self.backbone_name} backbone needs inputs of at least {self.min_input_size} px "
                             f"per side, got {tuple(x.shape[2:])}; raise quality.image_size or quality.roi_size")

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return resnet_stages(self.backbone, x)

    def _forward_parts(self, x: torch.Tensor, detach_truth: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head logits ``(B, K)`` (fused with the decoder prior when there is a decoder) and truth logits.

        ``detach_truth``: the decoded truth enters the score without gradient, so a loss on the score
        (QAR) cannot move g's idea of the truth toward the mask, only the mask toward it."""
        self._check_concat(x)
        if self.decoder is None:
            return self.head(self.backbone(x)), None
        stages = self._stages(x)
        logits = self.head(torch.flatten(self.backbone.avgpool(stages[-1]), 1))
        truth_logits = self.decoder(stages, x)
        if detach_truth:
            truth_logits = truth_logits.detach()
        prior = soft_dice(x[:, self.image_channels:], torch.sigmoid(truth_logits)).clamp(1e-4, 1 - 1e-4)
        return logits + self.prior_weight * torch.logit(prior), truth_logits

    def forward_concat_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores ``(B, K)`` of the regression head for a pre-concatenated input."""
        return self._forward_parts(x)[0]

    def forward_concat(self, x: torch.Tensor, return_truth: bool = False, return_readouts: bool = False,
                       detach_truth: bool = False):
        """Predicted Dice ``(B, K)`` in [0, 1] for a pre-concatenated ``(B, image_channels + K, *spatial)`` input
        already in the network's frame (no mask-centred crop is applied here; :meth:`forward` does it).

        ``return_truth=True`` (decoder models) returns the TRAINING outputs instead: the head's
        Dice (which the regression loss supervises) and the truth logits (the dense loss).
        ``return_readouts=True`` returns every readout of this one pass, ``{"fused": ..., "agreement": ...}``
        (agreement only with the decoder), so validation can compare them without a second pass.
        """
        if return_truth and self.decoder is None:
            raise ValueError("return_truth needs a predictor built with truth_decoder=True")
        logits, truth_logits = self._forward_parts(x, detach_truth)
        if return_truth:
            return torch.sigmoid(logits), truth_logits
        if not return_readouts:  # only the readout asked for: scoring (and QAR) pays for nothing else
            if self.readout == "agreement":
                return agreement_dice(x[:, self.image_channels:], truth_logits)
            return torch.sigmoid(logits)
        readouts = {"fused": torch.sigmoid(logits)}
        if truth_logits is not None:
            readouts["agreement"] = agreement_dice(x[:, self.image_channels:], truth_logits)
        return readouts

    def concat_inputs(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Concatenate image ``(B, Ci, *S)`` and masks ``(B, K, *S)`` along channels (dtype of image)."""
        if image.ndim != self.spatial_dims + 2 or image.shape[1] != self.image_channels:
            raise ValueError(f"image must be (B, {self.image_channels}, *spatial), got {tuple(image.shape)}")
        if masks.ndim != image.ndim or masks.shape[1] != self.num_fg_classes:
            raise ValueError(
                f"masks must be (B, {self.num_fg_classes}, *spatial) foreground channels "
                f"(see labels_to_fg_onehot / probs_to_fg), got {tuple(masks.shape)}"
            )
        if masks.shape[0] != image.shape[0] or masks.shape[2:] != image.shape[2:]:
            raise ValueError(f"image {tuple(image.shape)} and masks {tuple(masks.shape)} disagree")
        return torch.cat([image, masks.to(image.dtype)], dim=1)

    def forward(self, image: torch.Tensor, masks: torch.Tensor, return_truth: bool = False,
                return_readouts: bool = False, detach_truth: bool = False):
        """Predicted Dice per foreground class, ``(B, K)`` in [0, 1]. Masks may be soft.

        ``return_truth=True`` (decoder models): ``(head Dice, truth_logits)`` for the training
        losses; the truth logits are in the network's input frame (see :meth:`input_view`).
        ``return_readouts=True``: ``{"fused": ..., "agreement": ...}`` from one pass.
        """
        x = self.input_view(self.concat_inputs(image, masks), masks)
        return self.forward_concat(x, return_truth=return_truth, return_readouts=return_readouts,
                                   detach_truth=detach_truth)

    # ---------------------------------------------------------------- region of interest
    def roi_theta(self, masks: torch.Tensor) -> torch.Tensor | None:
        """Boxes of the mask-centred crops (``None`` without ``roi_size``)."""
        if self.roi_size is None:
            return None
        return mask_roi_theta(masks, self.roi_margin, self.roi_min_fraction)

    def input_view(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``x`` (image, masks or truth, in the frame of ``masks``) as the network sees it: the
        crop around ``masks`` with ``roi_size``, unchanged otherwise."""
        theta = self.roi_theta(masks)
        return x if theta is None else roi_crop(x, theta, self.roi_size)

    def source_view(self, y: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Inverse of :meth:`input_view`: network-frame maps ``y`` back to the frame of ``masks``,
        ``fill`` outside the crop."""
        theta = self.roi_theta(masks)
        return y if theta is None else roi_uncrop(y, theta, masks.shape[2:], fill)

    # ---------------------------------------------------------------- config round-trip
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a plain (JSON/YAML-friendly) dict; see :meth:`from_config`."""
        return {
            "spatial_dims": self.spatial_dims,
            "image_channels": self.image_channels,
            "num_fg_classes": self.num_fg_classes,
            "backbone": self.backbone_name,
            "depth": self.depth,
            "width": self.width if not isinstance(self.width, list) else list(self.width),
            "dropout": self.dropout,
            "conv1_t_size": self.conv1_t_size,
            "conv1_t_stride": self.conv1_t_stride,
            "no_max_pool": self.no_max_pool,
            "shortcut_type": self.shortcut_type,
            "norm": list(self.norm) if isinstance(self.norm, tuple) else self.norm,
            "truth_decoder": self.truth_decoder,
            "decoder_channels": self.decoder_channels,
            "readout": self.readout,
            "roi_size": self.roi_size,
            "roi_margin": self.roi_margin,
            "roi_min_fraction": self.roi_min_fraction,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QualityPredictor:
        """Rebuild an (untrained) predictor from :meth:`config` output; load the state dict after.

        Unknown keys raise, so a checkpoint written by an incompatible version fails loudly.
        """
        cfg = dict(config)
        if isinstance(cfg.get("norm"), list):
            cfg["norm"] = tuple(cfg["norm"])  # YAML/JSON turn tuples into lists
        return cls(**cfg)


# --------------------------------------------------------------------------- pretrained weights
# why: the readers moved to qgseg.models.weights (segmenters load encoders too); old names kept importable.
from ..models.weights import CONTAINER_KEYS as _CONTAINER_KEYS  # noqa: F401
from ..models.weights import PREFIXES as _PREFIXES  # noqa: F401
from ..models.weights import adapt_first_conv as _adapt_first_conv
from ..models.weights import read_state_dict as _read_state_dict


def load_pretrained_backbone(model: QualityPredictor | ResNet, path: str | Path) -> list[str]:
    """Initialise the backbone of ``model`` (ResNet, or the predictor's DenseNet/EfficientNet) from a LOCAL weight file.

    Accepts ``.pt/.pth`` (read with ``torch.load(weights_only=True)``) or ``.safetensors``, holding a
    MONAI or torchvision-style ResNet state dict (optionally wrapped in ``{"state_dict": ...}`` and/or
    prefixed ``module.``). The final ``fc`` is always skipped (the predictor has its own head); the
    first conv is adapted when only its input-channel count differs (see ``_adapt_first_conv``);
    other tensors load when names and shapes match.

    Returns:
        Sorted list of keys that were *not* loaded: backbone keys missing from / mismatching the file,
        and file keys that were ignored (e.g. ``fc.weight``). Details are logged at INFO level.

    Raises:
        FileNotFoundError: no such file. ValueError: nothing in the file matches the backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found (downloads are never attempted)")
    backbone = model.backbone if isinstance(model, QualityPredictor) else model
    name = model.backbone_name if isinstance(model, QualityPredictor) else "resnet"
    first_conv = FIRST_CONV[name]
    image_channels = model.image_channels if isinstance(model, QualityPredictor) else None
    src = _read_state_dict(path)
    own = backbone.state_dict()

    usable: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in src.items():
        if key.startswith("fc.") or key not in own:
            skipped.append(key)
            continue
        target = own[key]
        if value.shape == target.shape:
            usable[key] = value.to(target.dtype)
        elif key == first_conv and (adapted := _adapt_first_conv(value, target.shape, image_channels)) is not None:
            logger.info("%s: adapted %s %s -> %s", path.name, key, tuple(value.shape), tuple(target.shape))
            usable[key] = adapted.to(target.dtype)
        else:
            logger.info("%s: shape mismatch for %s: %s vs %s", path.name, key, tuple(value.shape), tuple(target.shape))
            skipped.append(key)
    if not any(k.endswith("weight") for k in usable):
        raise ValueError(f"{path}: no tensor matches the {name} backbone (different architecture?)")
    backbone.load_state_dict(usable, strict=False)
    # Backbone keys left at their init (missing or shape-mismatched) plus file keys ignored (fc, extras).
    not_loaded = sorted((set(own) - set(usable)) | set(skipped))
    logger.info("%s: loaded %d/%d backbone tensors; not loaded: %s", path.name, len(usable), len(own), not_loaded)
    return not_loaded
