"""The one in-memory representation of a segmentation case that every reader produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Case:
    """One image (2D or 3D) with an optional label map.

    Attributes:
        case_id: unique id within its dataset (file stem, ``patient001_frame01`` ...).
        image: float32 array, channels first: ``(C, H, W)`` for 2D; for 3D ``(C, D, H, W)`` from
            HDF5/NumPy volumes and nibabel's ``(C, X, Y, Z)`` from NIfTI (affine and spacing
            refer to that order; 2D networks slice along :func:`~qgseg.data.preprocess.slice_axis`).
        label: integer class-index array of the spatial shape (``(H, W)`` or ``(D, H, W)``),
            ``None`` for unlabeled cases. Values are validated against the declared classes.
        spacing: physical size of a voxel per spatial axis in mm (same axis order as
            ``label``), or ``None`` when the format carries none (PNG/JPEG): metrics then
            report distances in pixels.
        affine: 4x4 voxel-to-world matrix of NIfTI inputs, kept so predictions can be
            written back with the same geometry.
        group: grouping key for splits (patient, video sequence); a group never crosses splits.
        meta: free-form provenance (source paths, original dtype, format).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return self.image.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.image.shape[0])

    @property
    def has_label(self) -> bool:
        return self.label is not None

    @property
    def source(self) -> str:
        """The file the case was read from (its first image file), else its id: what messages name."""
        paths = self.meta.get("image_paths") or [self.meta.get("image_path") or self.case_id]
        return str(paths[0])
