"""From :class:`Case` arrays to network tensors and back: normalisation and resizing.

Training, validation, prediction and quality scoring all go through these functions, so a
model always sees its inputs prepared the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    """Resize a (B, *spatial) integer label map with nearest neighbour -> int64.

    Picks the voxels ``F.interpolate(mode="nearest")`` picks, by indexing: no full-size float copy
    of a clinical volume is made before it shrinks.
    """
    size = tuple(int(s) for s in size)
    if tuple(label.shape[1:]) == size:
        return label
    for axis, n in enumerate(size, start=1):
        src = label.shape[axis]
        if src != n:  # PyTorch's rule: floor(i * (in / out)) in float32, at most in - 1
            scale = torch.tensor(src / n, dtype=torch.float32)
            idx = (torch.arange(n, dtype=torch.float32) * scale).floor().long().clamp_max(src - 1)
            label = label.index_select(axis, idx)
    return label.long()


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
    #: per sample, the normalisation it was prepared with (``auto`` resolved: ``unit``, ``zscore``, ``none``)
    modes: list[str] = field(default_factory=list)
    #: per sample, foreground coordinates per class (:meth:`_fg_coords`), filled on first use; a caller that
    #: builds banks per batch (:class:`~qgseg.data.pool.LabeledPool`) passes and keeps it across batches
    fg_coords_cache: dict[int, list[torch.Tensor]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_cases(cls, cases: Sequence[Case], image_size: Sequence[int], normalize: str, resize: bool,
                   model_dims: int, with_labels: bool = True) -> "TensorBank":
        images, labels, ids, modes = [], [], [], []
        for case in cases:
            xt, yt = prepare_training_tensors(case, image_size, normalize, resize, model_dims, with_labels)
            modes += [resolve_normalize(normalize, case)] * xt.shape[0]
            for i in range(xt.shape[0]):
                images.append(xt[i])
                ids.append(case.case_id if xt.shape[0] == 1 else f"{case.case_id}#{i}")
                if with_labels:
                    if yt is None:
                        raise ValueError(f"{case.case_id}: a labeled case has no label")
                    labels.append(yt[i])
        return cls(images, labels if with_labels else None, ids, modes)

    def batch(self, indices: torch.Tensor, image_size: Sequence[int], gen: torch.Generator,
              fg_oversample: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stack samples ``indices``; random crops when samples are not already ``image_size``.

        ``fg_oversample``: share of the batch (its last samples, as nnU-Net does) whose crop is
        centred on a foreground voxel of a random class present in the sample (:func:`foreground_crop`);
        0 leaves every crop uniformly random (and draws nothing more from ``gen``).
        """
        xs, ys = [], []
        n = len(indices)
        forced_from = round(n * (1.0 - fg_oversample))
        for pos, i in enumerate(indices.tolist()):
            x = self.images[i]
            y = self.labels[i] if self.labels is not None else None
            if tuple(x.shape[1:]) != tuple(image_size):
                centre = None
                if pos >= forced_from and y is not None:
                    centre = foreground_centre(self._fg_coords(i), gen)
                x, y = _random_crop(x, y, image_size, gen, centre)
            xs.append(x)
            if y is not None:
                ys.append(y)
        return torch.stack(xs), (torch.stack(ys) if ys else None)

    def _fg_coords(self, i: int) -> list[torch.Tensor]:
        """Per foreground class present in sample ``i``, coordinates ``(n, dims)`` of its voxels
        (at most :data:`FG_COORDS_PER_CLASS`, evenly strided), computed once: scanning a clinical
        volume at every step would cost more than the step."""
        cache = self.fg_coords_cache
        if i not in cache:
            y = self.labels[i]
            coords = []
            for c in torch.unique(y).tolist():
                if c > 0:
                    where = torch.nonzero(y == c)
                    coords.append(where[::max(1, len(where) // FG_COORDS_PER_CLASS)])
            cache[i] = coords
        return cache[i]


#: Voxel coordinates kept per class and sample for foreground oversampling (nnU-Net keeps 10,000).
FG_COORDS_PER_CLASS = 10_000


def prepare_training_tensors(case: Case, image_size: Sequence[int], normalize: str, resize: bool, model_dims: int,
                             with_label: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`prepare_network_input` as tensors ``(x (N, C, *S) float32, y (N, *S) int64 or None)``,
    resized to ``image_size`` when ``resize``: one case as the training samplers hold it."""
    x, y, _ = prepare_network_input(case, normalize, model_dims)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y).long() if (with_label and y is not None) else None
    if resize:
        xt = resize_image(xt, image_size)
        yt = resize_label(yt, image_size) if yt is not None else None
    return xt, yt


def foreground_centre(coords: Sequence[torch.Tensor], gen: torch.Generator) -> torch.Tensor | None:
    """A random voxel of a random class among ``coords`` (per class ``(n, dims)``); ``None`` when
    the sample has no foreground (its crop stays uniformly random)."""
    if not coords:
        return None
    cls = coords[int(torch.randint(0, len(coords), (1,), generator=gen))]
    return cls[int(torch.randint(0, len(cls), (1,), generator=gen))]


def _random_crop(x: torch.Tensor, y: torch.Tensor | None, size: Sequence[int], gen: torch.Generator,
                 centre: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A crop of ``size`` of ``x`` (C, *S) and ``y`` (*S), zero-padded when smaller; uniformly random,
    or containing voxel ``centre`` (in the unpadded frame) near the crop's middle."""
    pads, before = [], []
    for dim, s in zip(reversed(x.shape[1:]), reversed(size)):
        extra = max(0, int(s) - int(dim))
        pads += [extra // 2, extra - extra // 2]
        before.insert(0, extra // 2)
    if any(pads):
        x = F.pad(x, pads)
        y = F.pad(y, pads) if y is not None else None
    if centre is None:
        starts = [int(torch.randint(0, int(d) - int(s) + 1, (1,), generator=gen)) for d, s in zip(x.shape[1:], size)]
    else:  # centred on the voxel, shifted to lie inside the (padded) image
        starts = [min(max(int(c) + b - int(s) // 2, 0), int(d) - int(s))
                  for c, b, d, s in zip(centre.tolist(), before, x.shape[1:], size)]
    sl = tuple(slice(a, a + int(s)) for a, s in zip(starts, size))
    return x[(slice(None),) + sl], (y[sl] if y is not None else None)
