"""The unlabeled image pool of a semi-supervised run, read lazily.

Unlabeled pools are large (``derm-unlabeled``: 1,500 RGB images, ~0.9 GB as float32 at full
size; the field's pools go to 30,000), so nothing is read up front: a sample is read from disk
on first use, prepared exactly as the segmenter's inputs are (normalisation, 2D slices of
volumes, resize) and kept in a bounded LRU cache as float16 (``cache_mb``). A pool that fits
the cache is read once; a larger one is re-read as it cycles.

Each sample also carries the affine map back to its stored intensities (``raw = x * scale +
shift`` per channel), so a quality predictor with another normalisation than the segmenter's
can prepare its own input from the same tensor.

Reading in worker processes (``ssl.pool_workers`` > 0, :class:`PoolLoader`): a
``torch.utils.data.DataLoader`` whose map-style dataset is indexed by the *step number* and
returns that step's whole unlabeled batch (indices, crops/slices, weak and strong views), drawn
with a generator seeded by ``(train.seed, rank, step)``. So reads, decoding and augmentation of
the next batches overlap the training step; the batches do not depend on the number of workers;
DDP ranks draw different samples; and a resumed run continues from the step count alone (no
sampler state to save). One iterator over an infinite sampler lives for the whole run, so the
workers start once (what ``persistent_workers`` gives across epochs). Each worker keeps its own
LRU cache with ``cache_mb / workers`` (the total stays bounded). Why not MONAI: ``CacheDataset``
caches the whole dataset in RAM up front (a 30,000-image pool would not fit, nor start quickly)
and ``PersistentDataset`` writes a disk copy of every prepared sample (30,000 files) without
bounding RAM; a bounded LRU per worker keeps RSS flat with no disk cache. ``pool_workers: 0``
keeps the in-process path, whose draws come from the trainer's generator as before.

Labeled cases (``data.lazy_labeled``) go through the same machinery (:class:`StepLoader`):
:class:`LabeledPool` prepares a case as :class:`~qgseg.data.preprocess.TensorBank` does and caches
image (float16) and label (uint8); :class:`LabeledLoader` draws its batches in a stream of its own,
step-seeded even with 0 workers. The trainer augments them afterwards, as it does the bank's.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .case import Case
from .io import DataError
from .preprocess import (
    TensorBank,
    _random_crop,
    prepare_network_input,
    prepare_training_tensors,
    resize_image,
    resolve_normalize,
    slice_axis,
)

if TYPE_CHECKING:
    from ..config import AugmentConfig

__all__ = ["ImagePool", "LabeledLoader", "LabeledPool", "PoolLoader", "StepLoader", "UnlabeledViews", "draw_labeled",
           "draw_unlabeled", "labeled_bytes", "pool_workers", "raw_affine"]


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

    #: how messages name the pool
    name = "unlabeled pool"

    def __init__(self, sources: Sequence[tuple[object, str]], image_size: Sequence[int], normalize: str,
                 resize: bool, model_dims: int, cache_mb: float = 2048, channels: int | None = None) -> None:
        if not sources:
            raise ValueError(f"the {self.name} is empty")
        self.sources = list(sources)
        self.image_size = [int(s) for s in image_size]
        self.normalize = normalize
        self.resize = resize
        self.model_dims = model_dims
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._cache: OrderedDict[int, tuple[Any, ...]] = OrderedDict()
        self._cached_bytes = 0
        self.reads = 0  # samples read from disk (cache misses)
        self.channels = channels
        self.converted: set[str] = set()  # grey files repeated to RGB, each announced once

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _load(self, i: int) -> Case:
        """Case ``i`` from disk, grey repeated to RGB when the network takes RGB."""
        ds, case_id = self.sources[i]
        case: Case = ds.load(case_id)
        if self.channels is not None and case.channels != self.channels:
            from .check import channel_warning, harmonise_channels

            new = set(harmonise_channels([case], self.channels)[1]) - self.converted
            if new:
                print(f"{self.name}: {channel_warning(sorted(new), self.channels)}")
                self.converted |= new
        return case

    @staticmethod
    def _nbytes(item: tuple[Any, ...]) -> int:
        """Bytes a cached item counts for: its image."""
        return item[0].numel() * item[0].element_size()

    def _prepare(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        case = self._load(i)
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

    def _get(self, i: int) -> tuple[Any, ...]:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        item = self._prepare(i)
        self.reads += 1
        size = self._nbytes(item)
        if size <= self.cache_bytes:
            self._cache[i] = item
            self._cached_bytes += size
            self.bound_cache(self.cache_bytes)
        return item

    def bound_cache(self, cache_bytes: int) -> None:
        """Set the cache's bound, dropping least recently used samples beyond it."""
        self.cache_bytes = int(cache_bytes)
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= self._nbytes(old)

    def batch(self, indices: torch.Tensor, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """``(images (B, C, *size), scale (B, C), shift (B, C), eight_bit)`` for pool ``indices``."""
        xs, scales, shifts, eight = zip(*(self.sample(int(i), gen) for i in indices.tolist()))
        return torch.stack(xs), torch.stack(scales), torch.stack(shifts), all(eight)

    def sample(self, i: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """``(image (C, *size) float32, scale (C,), shift (C,), eight_bit)``: sample ``i``, one random
        slice of a volume, randomly cropped when not resized."""
        x, scale, shift, e8 = self._get(i)
        j = int(torch.randint(0, x.shape[0], (1,), generator=gen)) if x.shape[0] > 1 else 0
        xi = x[j].float()
        if tuple(xi.shape[1:]) != tuple(self.image_size):
            xi, _ = _random_crop(xi, None, self.image_size, gen)
        return xi, scale[j], shift[j], e8

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the cache (always <= ``cache_bytes``)."""
        return self._cached_bytes


@dataclass
class UnlabeledViews:
    """The views of an unlabeled batch: the weak one (``spatial``: flips, rotation, scaling; ``None``
    without augmentation) and, when the method needs it, the strong one (``strong``: the weak
    view's geometry with photometric augmentation). Picklable, so workers can apply it."""

    spatial: AugmentConfig | None = None
    strong: AugmentConfig | None = None

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        from .augment import intensity_augment, spatial_augment

        if self.spatial is not None:
            image, _ = spatial_augment(image, None, gen, self.spatial)
        strong = intensity_augment(image, gen, self.strong) if self.strong is not None else None
        return image, strong


#: an unlabeled batch: ``(weak, strong or None, scale (B, C), shift (B, C), eight_bit)``
UnlabeledDraw = tuple[torch.Tensor, "torch.Tensor | None", torch.Tensor, torch.Tensor, bool]


def draw_unlabeled(pool: ImagePool, batch_size: int, gen: torch.Generator, views: UnlabeledViews) -> UnlabeledDraw:
    """Random pool samples and their views, every draw from ``gen`` (indices, slices, crops, views)."""
    idx = torch.randint(0, len(pool), (batch_size,), generator=gen)
    image, scale, shift, eight_bit = pool.batch(idx, gen)
    weak, strong = views(image, gen)
    return weak, strong, scale, shift, eight_bit


#: generator streams of :func:`step_generator`: labeled and unlabeled batches of a step draw independently
UNLABELED_STREAM, LABELED_STREAM = 0x9E37, 0x1AB1


def step_generator(seed: int, rank: int, step: int, stream: int = UNLABELED_STREAM) -> torch.Generator:
    """The generator of batch ``step`` of ``rank`` in ``stream``: a pure function of its arguments, so a
    resumed run redraws exactly the batches the killed one would have drawn."""
    state = np.random.SeedSequence([seed % 2 ** 64, rank, step, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def pool_workers(setting: int | None, device: torch.device) -> int:
    """``ssl.pool_workers``; ``None``: 2 when training on a GPU (reads must keep up with it), else 0
    (on a CPU the training step already uses the cores workers would take)."""
    if setting is not None:
        return int(setting)
    return 2 if device.type == "cuda" else 0


class _StepBatches(torch.utils.data.Dataset):
    """Map-style dataset over step numbers: item ``k`` is ``draw`` with batch ``k``'s generator."""

    def __init__(self, pool: ImagePool, draw: Callable[[torch.Generator], Any], seed: int, rank: int,
                 stream: int) -> None:
        self.pool, self.draw, self.seed, self.rank, self.stream = pool, draw, seed, rank, stream

    def __getitem__(self, step: int) -> Any:
        try:
            return self.draw(step_generator(self.seed, self.rank, step, self.stream))
        except DataError as err:  # why returned: re-raised in the main process as itself, naming the file
            return err


class _Steps(torch.utils.data.Sampler):
    """Step numbers ``start, start + 1, ...`` without end."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            yield step
            step += 1


def _split_cache(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    pool = info.dataset.pool
    pool.bound_cache(pool.cache_bytes // info.num_workers)  # why: together the workers stay within the bound


class StepLoader:
    """Batches ``draw(step_generator(seed, rank, step, stream))`` for ``step = start, start + 1, ...``,
    read ahead by ``workers`` DataLoader processes (see the module docstring).

    Args:
        pool: the pool ``draw`` reads (each worker reads through its own copy, its cache bounded to
            ``cache_mb / workers``).
        draw: one batch from a generator; picklable (a module-level function or a ``partial`` of one).
        seed, rank: with the step number, seed each batch's generator (ranks draw different samples).
        start: the first step to draw (the iterations already done when resuming).
        workers: DataLoader processes; 0 reads in this process (same batches).
        prefetch: batches each worker reads ahead.
        pin_memory: page-locked batches for fast copies to a GPU.
        stream: the generator stream (labeled and unlabeled loaders of one run use different ones).
    """

    def __init__(self, pool: ImagePool, draw: Callable[[torch.Generator], Any], seed: int, rank: int, start: int,
                 workers: int, prefetch: int = 2, pin_memory: bool = False, stream: int = UNLABELED_STREAM) -> None:
        self.workers = workers
        loader = torch.utils.data.DataLoader(
            _StepBatches(pool, draw, seed, rank, stream), batch_size=None, sampler=_Steps(start),
            num_workers=workers, prefetch_factor=prefetch if workers else None, pin_memory=pin_memory,
            worker_init_fn=_split_cache if workers else None, persistent_workers=workers > 0)
        self._it = iter(loader)

    def next(self) -> Any:
        """The next batch."""
        item = next(self._it)
        if isinstance(item, DataError):
            raise item
        return item


class PoolLoader(StepLoader):
    """Unlabeled batches ``(weak, strong or None, scale, shift, eight_bit)`` of ``batch_size`` samples,
    the ``views`` applied in the workers; other arguments as :class:`StepLoader`'s."""

    def __init__(self, pool: ImagePool, batch_size: int, seed: int, rank: int, start: int, views: UnlabeledViews,
                 workers: int, prefetch: int = 2, pin_memory: bool = False) -> None:
        super().__init__(pool, partial(draw_unlabeled, pool, batch_size, views=views), seed, rank, start, workers,
                         prefetch, pin_memory)
        self.batch_size = batch_size


# ----------------------------------------------------------------------------- labeled cases

def labeled_bytes(first: Case, n_cases: int, image_size: Sequence[int], normalize: str, resize: bool,
                  model_dims: int) -> int:
    """Estimated bytes of ``n_cases`` cases like ``first`` held by a :class:`TensorBank` (float32 images,
    int64 labels), to choose the lazy path (``data.lazy_labeled: auto``) without reading every case."""
    x, _, _ = prepare_network_input(first, normalize, model_dims)
    spatial = [int(s) for s in image_size] if resize else list(x.shape[2:])
    voxels = x.shape[0] * int(np.prod(spatial))
    return n_cases * voxels * (4 * x.shape[1] + 8)


class LabeledPool(ImagePool):
    """Labeled cases ``(dataset, case_id)``, prepared on demand (like :class:`TensorBank`'s samples) and kept
    in the bounded LRU cache: image float16, label uint8, and the foreground coordinates used for
    ``fg_oversample`` once computed (at most 10,000 per class, not counted against ``cache_mb``).

    Batches draw a case uniformly, then one random slice when a volume meets a 2D network (a
    :class:`TensorBank` draws uniformly over slices), then crop exactly as :meth:`TensorBank.batch`.
    Other arguments as :class:`ImagePool`'s.
    """

    name = "labeled set"

    def __init__(self, sources: Sequence[tuple[object, str]], image_size: Sequence[int], normalize: str,
                 resize: bool, model_dims: int, cache_mb: float = 2048, channels: int | None = None,
                 fg_oversample: float = 0.0) -> None:
        super().__init__(sources, image_size, normalize, resize, model_dims, cache_mb, channels)
        self.fg_oversample = fg_oversample

    @staticmethod
    def _nbytes(item: tuple[Any, ...]) -> int:
        return sum(t.numel() * t.element_size() for t in item[:2])

    def _prepare(self, i: int) -> tuple[torch.Tensor, torch.Tensor, dict[int, list[torch.Tensor]]]:
        case = self._load(i)
        xt, yt = prepare_training_tensors(case, self.image_size, self.normalize, self.resize, self.model_dims)
        if yt is None:
            raise DataError("a labeled case has no label", case.source)
        # why uint8: an eighth of int64 in the cache; more than 255 classes keep int64
        return xt.half(), yt.to(torch.uint8 if int(yt.max()) < 256 else torch.int64), {}

    def batch(self, indices: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, C, *size) float32, labels (B, *size) uint8)`` for cases ``indices``."""
        items, picks = [], []
        for i in indices.tolist():
            x, y, coords = self._get(int(i))
            j = int(torch.randint(0, x.shape[0], (1,), generator=gen)) if x.shape[0] > 1 else 0
            items.append((x[j].float(), y[j]))
            picks.append((coords, j))
        known = {pos: coords[j] for pos, (coords, j) in enumerate(picks) if j in coords}
        bank = TensorBank([x for x, _ in items], [y for _, y in items], [""] * len(items), fg_coords_cache=known)
        image, label = bank.batch(torch.arange(len(items)), self.image_size, gen, self.fg_oversample)
        for pos, found in bank.fg_coords_cache.items():  # why: scanning a volume for foreground once, not per draw
            coords, j = picks[pos]
            coords[j] = found
        return image, label


def draw_labeled(pool: LabeledPool, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random labeled cases, every draw from ``gen`` (cases, slices, crops)."""
    return pool.batch(torch.randint(0, len(pool), (batch_size,), generator=gen), gen)


class LabeledLoader(StepLoader):
    """Labeled batches ``(image, label int64)`` of ``batch_size`` cases from ``pool``, step-seeded in their own
    stream; other arguments as :class:`StepLoader`'s. Labels cross from the workers as uint8."""

    def __init__(self, pool: LabeledPool, batch_size: int, seed: int, rank: int, start: int, workers: int,
                 prefetch: int = 2, pin_memory: bool = False) -> None:
        super().__init__(pool, partial(draw_labeled, pool, batch_size), seed, rank, start, workers, prefetch,
                         pin_memory, LABELED_STREAM)
        self.batch_size = batch_size

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = super().next()
        return image, label.long()
