"""Prediction on whole cases at their original resolution.

One :class:`Segmenter` serves validation, test evaluation, ``qgseg predict`` and quality
scoring, so preprocessing is identical everywhere. 2D networks run slice by slice on 3D
volumes (ACDC); inputs larger than the training size use MONAI's sliding-window inferer
when the model was trained on crops (``resize: false``).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.case import Case
from ..data.io import DataError
from ..data.preprocess import prepare_network_input, resize_image, slice_axis


def match_channels(case: Case, expected: int, model: str) -> Case:
    """``case`` with the channel count ``model`` expects.

    A grey image for a 3-channel (RGB) model is repeated to 3 channels with a warning, as
    training does (a grey frame among colour photos is common); any other mismatch raises a
    :class:`DataError` naming the image file and both channel counts.
    """
    if case.channels == expected:
        return case
    source = case.source
    if case.channels == 1 and expected == 3:
        print(f"warning: {source}: grey image converted to RGB (the model expects 3 channels)", file=sys.stderr)
        return dataclasses.replace(case, image=np.repeat(case.image, 3, axis=0))
    raise DataError(f"image has {case.channels} channel(s), {model} expects {expected}", source)


@dataclass
class ModelSpec:
    """What a checkpoint records to rebuild and feed its network."""

    name: str
    spatial_dims: int
    in_channels: int
    classes: list[str]
    image_size: list[int]
    resize: bool = True
    normalize: str = "auto"
    features: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    dropout: float = 0.0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(**d)

    def build(self) -> nn.Module:
        from ..models import build_model

        return build_model(self.name, self.spatial_dims, self.in_channels, self.num_classes, self.features,
                           self.dropout)


class Segmenter:
    """A network plus its preprocessing; ``predict_proba(case)`` -> (K, *case.spatial_shape)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, device: torch.device | str = "cpu",
                 sw_batch_size: int = 4, sw_overlap: float = 0.25, slice_batch: int = 16) -> None:
        self.model = model
        self.spec = spec
        self.device = torch.device(device)
        self.sw_batch_size = sw_batch_size
        self.sw_overlap = sw_overlap
        self.slice_batch = slice_batch

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> "Segmenter":
        from ..engine.checkpoint import load_checkpoint

        state = load_checkpoint(path, expect="segmentation")
        if "spec" not in state["meta"]:
            raise DataError("not a qgseg segmentation checkpoint (no model spec recorded)", path)
        spec = ModelSpec.from_dict(state["meta"]["spec"])
        model = spec.build()
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:  # edited or mismatched file: the weights do not fit the recorded spec
            raise DataError(f"its weights do not fit the recorded model {spec.name} ({str(exc).splitlines()[0]})",
                            path) from None
        return cls(model.to(device).eval(), spec, device, **kwargs)

    def prepare(self, case: Case) -> tuple[torch.Tensor, bool]:
        """Normalised (N, C, *spatial) tensor (:func:`prepare_network_input`); N = slices when a volume
        meets a 2D network, each slice normalised on its own as in training."""
        case = match_channels(case, self.spec.in_channels, "the segmentation model")
        x, _, sliced = prepare_network_input(case, self.spec.normalize, self.spec.spatial_dims)
        return torch.from_numpy(x), sliced

    @torch.no_grad()
    def logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch at the batch's own resolution."""
        x = x.to(self.device)
        out_size = x.shape[2:]
        if self.spec.resize:
            logits = self.model(resize_image(x, self.spec.image_size))
            return resize_image(logits, out_size)
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(x, roi_size=self.spec.image_size, sw_batch_size=self.sw_batch_size,
                                        predictor=self.model, overlap=self.sw_overlap, mode="gaussian")

    @torch.no_grad()
    def predict_proba(self, case: Case) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        x, sliced = self.prepare(case)
        outs = [F.softmax(self.logits_batch(x[i:i + self.slice_batch]).float(), dim=1).cpu()
                for i in range(0, x.shape[0], self.slice_batch)]
        self.model.train(was_training)
        # why not always cat: for one volume it would copy K float32 channels of a clinical volume
        probs = outs[0] if len(outs) == 1 else torch.cat(outs)  # (N, K, *spatial)
        if sliced:  # (S, K, h, w) -> (K, *case.spatial_shape)
            return np.moveaxis(probs.numpy(), 0, 1 + slice_axis(case))
        return probs[0].numpy()

    def predict(self, case: Case) -> np.ndarray:
        return self.predict_proba(case).argmax(0).astype(np.uint8)
