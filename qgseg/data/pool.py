"""The unlabeled image pool of a semi-supervised run, read lazily.

Unlabeled pools are large (``derm-unlabeled``: 1,500 RGB images, ~0.9 GB as float32 at full
size; the field's pools go to 30,000), so nothing is read up front: a sample is read from disk
on first use, prepared exactly as the segmenter's inputs are (normalisation, 2D slices of
volumes, resize) and kept in a bounded LRU cache as float16 (``cache_mb``). A pool that fits
the cache is read once; a larger one is re-read as it cycles.

Each sample also carries the affine map back to its stored intensities (``raw = x * scale +
shift`` per channel), so a quality predictor with another normalisation than the segmenter's
can prepare its own input from the same tensor.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from .case import Case
from .preprocess import _random_crop, prepare_network_input, resize_image, resolve_normalize, slice_axis

__all__ = ["ImagePool", "raw_affine"]


def raw_affine(raw: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` per channel such that ``raw = normalised * scale + shift`` for one sample ``(C, *S)``."""
    c = raw.shape[0]
    if mode == "unit":
        return np.full(c, 255.0, np.float32), np.zeros(c, np.float32)
    if mode == "zscore":
        flat = raw.reshape(c, -1).astype(np.float64)
        return np.maximum(flat.std(1), 1e-6).astype(np.float32), flat.mean(1).astype(np.float32)
    return np.ones(c, np.float32), np.zeros(c, np.float32)


class ImagePool:
    """Unlabeled samples ``(dataset, case_id)``, prepared on demand and cached.

    Args:
        sources: ``(SegDataset, case_id)`` pairs (the run's unlabeled cases, then the extra dataset's).
        image_size: training size; with ``resize`` every sample is resized to it, otherwise batches are
            random crops.
        normalize: the segmenter's normalisation (``data.normalize``).
        model_dims: 2 or 3; a volume given to a 2D network yields one random slice per draw.
        cache_mb: bound of the cache of prepared samples.
        channels: the network's input channels; grey samples are repeated to RGB (said once per
            file), other mismatches raise DataError naming the file.
    """

    def __init__(self, sources: Sequence[tuple[object, str]], image_size: Sequence[int], normalize: str,
                 resize: bool, model_dims: int, cache_mb: float = 2048, channels: int | None = None) -> None:
        if not sources:
            raise ValueError("the unlabeled pool is empty")
        self.sources = list(sources)
        self.image_size = [int(s) for s in image_size]
        self.normalize = normalize
        self.resize = resize
        self.model_dims = model_dims
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = OrderedDict()
        self._cached_bytes = 0
        self.reads = 0  # samples read from disk (cache misses)
        self.channels = channels
        self.converted: set[str] = set()  # grey files repeated to RGB, each announced once

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _prepare(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        ds, case_id = self.sources[i]
        case: Case = ds.load(case_id)
        if self.channels is not None and case.channels != self.channels:
            from .check import channel_warning, harmonise_channels

            new = set(harmonise_channels([case], self.channels)[1]) - self.converted
            if new:
                print(f"unlabeled pool: {channel_warning(sorted(new), self.channels)}")
                self.converted |= new
        mode = resolve_normalize(self.normalize, case)
        x, _, sliced = prepare_network_input(case, self.normalize, self.model_dims)
        xt = torch.as_tensor(np.ascontiguousarray(x)).float()
        if sliced:  # the raw intensities of each slice, for its own affine
            raw_slices = np.moveaxis(case.image, 1 + slice_axis(case), 0)
            aff = [raw_affine(s, mode) for s in raw_slices]
        else:
            aff = [raw_affine(case.image, mode)]
        scale = torch.from_numpy(np.stack([a[0] for a in aff]))
        shift = torch.from_numpy(np.stack([a[1] for a in aff]))
        if self.resize:
            xt = resize_image(xt, self.image_size)
        eight_bit = str(case.meta.get("dtype", "")) in ("uint8", "bool")
        return xt.half(), scale, shift, eight_bit

    def _get(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        item = self._prepare(i)
        self.reads += 1
        size = item[0].numel() * item[0].element_size()
        if size <= self.cache_bytes:
            self._cache[i] = item
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old[0].numel() * old[0].element_size()
        return item

    def batch(self, indices: torch.Tensor, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """``(images (B, C, *size), scale (B, C), shift (B, C), eight_bit)`` for pool ``indices``."""
        xs, scales, shifts, eight = [], [], [], []
        for i in indices.tolist():
            x, scale, shift, e8 = self._get(int(i))
            j = int(torch.randint(0, x.shape[0], (1,), generator=gen)) if x.shape[0] > 1 else 0
            xi = x[j].float()
            if tuple(xi.shape[1:]) != tuple(self.image_size):
                xi, _ = _random_crop(xi, None, self.image_size, gen)
            xs.append(xi)
            scales.append(scale[j])
            shifts.append(shift[j])
            eight.append(e8)
        return torch.stack(xs), torch.stack(scales), torch.stack(shifts), all(eight)
