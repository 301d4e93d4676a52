"""From :class:`Case` arrays to network tensors and back: normalisation and resizing.

Training, validation, prediction and quality scoring all go through these functions, so a
model always sees its inputs prepared the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .case import Case


def resolve_normalize(mode: str, case: Case) -> str:
    """``auto``: 8-bit images (photos, dermoscopy, endoscopy) -> ``unit``; anything else -> ``zscore``."""
    if mode != "auto":
        return mode
    return "unit" if str(case.meta.get("dtype", "")) in ("uint8", "bool") else "zscore"


def normalize_image(image: np.ndarray, mode: str) -> np.ndarray:
    """Normalise a channels-first image; z-score is per channel over the whole image.

    Callers that feed a network go through :func:`prepare_network_input`, which decides what
    "the whole image" is (a 2D slice when a volume meets a 2D network).
    """
    image = image.astype(np.float32, copy=False)
    if mode == "unit":
        return image / 255.0
    if mode == "zscore":
        axes = tuple(range(1, image.ndim))
        mean = image.mean(axis=axes, keepdims=True)
        std = image.std(axis=axes, keepdims=True)
        return (image - mean) / np.maximum(std, 1e-6)
    if mode == "none":
        return image
    raise ValueError(f"unknown normalisation '{mode}'")


def resize_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a (B, C, *spatial) float tensor (bilinear / trilinear)."""
    size = tuple(int(s) for s in size)
    if tuple(image.shape[2:]) == size:
        return image
    mode = "bilinear" if image.ndim == 4 else "trilinear"
    return F.interpolate(image, size=size, mode=mode, align_corners=False)


def resize_label(label: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a (B, *spatial) integer label map with nearest neighbour."""
    size = tuple(int(s) for s in size)
    if tuple(label.shape[1:]) == size:
        return label
    out = F.interpolate(label[:, None].float(), size=size, mode="nearest")
    return out[:, 0].long()


def slice_axis(case: Case) -> int:
    """Spatial axis along which a volume is cut into 2D slices.

    NIfTI arrays keep nibabel's (X, Y, Z) order, so slices run along Z (axis 2); HDF5/NumPy
    volumes of the SSL field are stored slice-first (D, H, W). ``meta["slice_axis"]`` wins.
    """
    if "slice_axis" in case.meta:
        return int(case.meta["slice_axis"])
    return 2 if str(case.meta.get("format", "")).startswith(".nii") else 0


def as_slices(case: Case, model_dims: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Present a case to a ``model_dims``-D network.

    A 3D case given to a 2D network becomes a stack of 2D slices along :func:`slice_axis`:
    returns ((S, C, h, w), (S, h, w) or None, True). 2D->2D and 3D->3D add a batch axis.
    """
    if case.spatial_dims == model_dims:
        label = None if case.label is None else case.label[None]
        return case.image[None], label, False
    if case.spatial_dims == 3 and model_dims == 2:
        axis = slice_axis(case)
        image = np.moveaxis(case.image, 1 + axis, 0)  # (C, ...) -> (S, C, h, w)
        label = None if case.label is None else np.moveaxis(case.label, axis, 0)
        return image, label, True
    raise ValueError(f"{case.case_id}: a {case.spatial_dims}D case cannot be fed to a {model_dims}D network")


def prepare_network_input(case: Case, normalize: str, model_dims: int
                          ) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """The one way a case becomes network input: ``(x (N, C, *S) float32, y (N, *S) or None, sliced)``.

    Slices first, then normalises: a 3D case given to a 2D network is cut into 2D slices
    (:func:`as_slices`) and each slice is normalised on its own, exactly as if it had been
    loaded as a separate 2D case (ACDC trains on single slices and tests on volumes, so a
    2D network must see each slice z-scored per slice in both). 2D->2D and 3D->3D normalise
    the whole case. ``normalize`` may be ``auto`` (resolved against the case).
    """
    mode = resolve_normalize(normalize, case)
    x, y, sliced = as_slices(case, model_dims)
    if sliced:
        # a contiguous copy per slice: the same arithmetic as a separately loaded 2D case
        out = np.stack([normalize_image(np.ascontiguousarray(x[i]), mode) for i in range(x.shape[0])])
    else:
        out = normalize_image(x[0], mode)[None]
    out = np.ascontiguousarray(out, dtype=np.float32)
    if y is not None:
        y = np.ascontiguousarray(y)
    return out, y, sliced


@dataclass
class TensorBank:
    """Cases preloaded as tensors for fast random batch sampling.

    With ``resize`` every sample is resized to ``image_size`` and stacked; otherwise samples
    keep their size and batches are random crops of ``image_size`` (padded when smaller).
    3D cases given to a 2D network contribute one sample per slice. Samples are prepared by
    :func:`prepare_network_input`, like :class:`~qgseg.evaluation.inference.Segmenter` inputs.
    """

    images: list[torch.Tensor]
    labels: list[torch.Tensor] | None
    ids: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_cases(cls, cases: Sequence[Case], image_size: Sequence[int], normalize: str, resize: bool,
                   model_dims: int, with_labels: bool = True) -> "TensorBank":
        images, labels, ids = [], [], []
        for case in cases:
            x, y, _ = prepare_network_input(case, normalize, model_dims)
            xt = torch.from_numpy(x)
            yt = torch.from_numpy(y).long() if (with_labels and y is not None) else None
            if resize:
                xt = resize_image(xt, image_size)
                yt = resize_label(yt, image_size) if yt is not None else None
            for i in range(xt.shape[0]):
                images.append(xt[i])
                ids.append(case.case_id if xt.shape[0] == 1 else f"{case.case_id}#{i}")
                if with_labels:
                    if yt is None:
                        raise ValueError(f"{case.case_id}: a labeled case has no label")
                    labels.append(yt[i])
        return cls(images, labels if with_labels else None, ids)

    def batch(self, indices: torch.Tensor, image_size: Sequence[int], gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stack samples ``indices``; random crops when samples are not already ``image_size``."""
        xs, ys = [], []
        for i in indices.tolist():
            x = self.images[i]
            y = self.labels[i] if self.labels is not None else None
            if tuple(x.shape[1:]) != tuple(image_size):
                x, y = _random_crop(x, y, image_size, gen)
            xs.append(x)
            if y is not None:
                ys.append(y)
        return torch.stack(xs), (torch.stack(ys) if ys else None)


def _random_crop(x: torch.Tensor, y: torch.Tensor | None, size: Sequence[int], gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    pads = []
    for dim, s in zip(reversed(x.shape[1:]), reversed(size)):
        extra = max(0, int(s) - int(dim))
        pads += [extra // 2, extra - extra // 2]
    if any(pads):
        x = F.pad(x, pads)
        y = F.pad(y, pads) if y is not None else None
    starts = [int(torch.randint(0, int(d) - int(s) + 1, (1,), generator=gen)) for d, s in zip(x.shape[1:], size)]
    sl = tuple(slice(a, a + int(s)) for a, s in zip(starts, size))
    return x[(slice(None),) + sl], (y[sl] if y is not None else None)
