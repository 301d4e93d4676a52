"""Self-supervised pretraining of the quality predictor's encoder on the run's own images.

No ImageNet weights can be downloaded here, and many clinics cannot download them either; but
every semi-supervised run has a pool of images of its own domain. This module pretrains the
predictor's ResNet encoder on them with **image restoration** in the manner of Models Genesis
(Zhou et al., MICCAI 2019): each image is damaged by local pixel shuffling, a random monotonic
intensity curve, in-painting (noise boxes) or out-painting (everything outside a box), and an
encoder-decoder learns to restore it (L2).

Why restoration and not contrastive learning: contrastive losses (SimCLR, MoCo) need large
batches or memory banks of negatives and long schedules, which a CPU and a few hundred images do
not give; restoration learns from one image at a time at batch 8-16, is stable, and its dense
target makes the encoder represent boundaries and local structure, which is what judging a
mask's outline needs. Masked-image modelling is the same idea with patches (kept in
:func:`damage` as in-painting).

Only the training images of the run are used: its labeled and unlabeled training cases and the
extra unlabeled pool, never validation or test images, and no labels. The result is a local
weight file (``.pt``, the backbone's state dict) that ``quality.pretrained`` loads through
:func:`~qgseg.quality.predictor.load_pretrained_backbone` (image channels keep their kernels,
the mask channels start from the mean kernel), plus a JSON sidecar describing the pretraining.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from ..config import RunConfig
from ..data.run_data import RunData
from .predictor import RESNET_LAYOUTS, TruthMapDecoder, _block_inplanes, resnet_stages


@dataclass
class PretrainResult:
    """What :func:`pretrain_encoder` did; also written beside the weights as ``<file>.json``."""

    weights: str
    method: str
    steps: int
    batch_size: int
    crop_size: list[int]
    images: int
    image_sources: dict[str, int]
    first_loss: float
    final_loss: float
    wall_s: float


class RestorationNet(nn.Module):
    """The predictor's ResNet encoder (image channels only) with a light FPN decoder that
    restores the undamaged image."""

    def __init__(self, spatial_dims: int, channels: int, depth: int, width: Any, no_max_pool: bool) -> None:
        super().__init__()
        block, layers = RESNET_LAYOUTS[depth]
        planes = _block_inplanes(width)
        self.backbone = ResNet(block=block, layers=layers, block_inplanes=planes, spatial_dims=spatial_dims,
                               n_input_channels=channels, no_max_pool=no_max_pool, shortcut_type="B",
                               bias_downsample=False, feed_forward=False)
        expansion = 4 if block == "bottleneck" else 1
        self.decoder = TruthMapDecoder(spatial_dims, [c * expansion for c in planes], channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(resnet_stages(self.backbone, x), x)


def _boxes(shape: tuple[int, ...], n: int, frac: tuple[float, float], gen: torch.Generator) -> list[list[slice]]:
    """``n`` random boxes, each side a ``frac`` share of the image side."""
    out = []
    for _ in range(n):
        box = []
        for side in shape:
            size = max(1, int(side * (frac[0] + (frac[1] - frac[0]) * torch.rand(1, generator=gen).item())))
            start = int(torch.randint(0, side - size + 1, (1,), generator=gen).item())
            box.append(slice(start, start + size))
        out.append(box)
    return out


def damage(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Models-Genesis damage of a batch ``(B, C, *spatial)`` of normalised images, per sample:
    a random monotonic intensity curve (p 0.9), local pixel shuffling (p 0.5), then either
    in-painting with noise boxes or out-painting outside one box (p 0.9 of one of the two)."""
    out = x.clone()
    spatial = tuple(x.shape[2:])
    for b in range(x.shape[0]):
        img = out[b]
        if torch.rand(1, generator=gen).item() < 0.9:  # monotonic curve on the sample's own range
            lo, hi = img.min(), img.max()
            t = (img - lo) / (hi - lo + 1e-6)
            gamma = math.exp((torch.rand(1, generator=gen).item() * 2 - 1) * math.log(3.0))
            img = lo + (hi - lo) * t.clamp(0, 1) ** gamma
        if torch.rand(1, generator=gen).item() < 0.5:  # shuffle pixels inside small boxes
            for box in _boxes(spatial, 20, (0.02, 0.08), gen):
                patch = img[(slice(None), *box)]
                flat = patch.reshape(patch.shape[0], -1)
                perm = torch.randperm(flat.shape[1], generator=gen)
                img[(slice(None), *box)] = flat[:, perm].reshape(patch.shape)
        u = torch.rand(1, generator=gen).item()
        if u < 0.45:  # in-painting: the encoder must infer hidden content from context
            for box in _boxes(spatial, int(torch.randint(1, 6, (1,), generator=gen)), (0.1, 0.25), gen):
                img[(slice(None), *box)] = torch.randn(img[(slice(None), *box)].shape, generator=gen)
        elif u < 0.9:  # out-painting: keep one large box
            keep = _boxes(spatial, 1, (0.4, 0.7), gen)[0]
            inner = img[(slice(None), *keep)].clone()
            img = torch.randn(img.shape, generator=gen)
            img[(slice(None), *keep)] = inner
        out[b] = img
    return out


def _random_crops(x: torch.Tensor, size: list[int], gen: torch.Generator) -> torch.Tensor:
    """A random ``size`` crop of each sample (the predictor sees mask-centred crops of this size)."""
    if list(x.shape[2:]) == size:
        return x
    crops = []
    for b in range(x.shape[0]):
        box = [slice(s0, s0 + c) for s0, c in
               ((int(torch.randint(0, s - c + 1, (1,), generator=gen)), c) for s, c in zip(x.shape[2:], size, strict=True))]
        crops.append(x[(b, slice(None), *box)])
    return torch.stack(crops)


def pretrain_images(cfg: RunConfig, data: RunData | None = None):
    """The run's training images for pretraining: labeled + unlabeled training cases and the extra
    unlabeled pool (never val/test), as an :class:`~qgseg.data.pool.ImagePool` at the predictor's
    input size, and the count per source. ``data``: the run's resolved data, when already prepared."""
    from ..data.pool import ImagePool
    from ..data.run_data import prepare_run_data
    from .training import predictor_size

    data = data or prepare_run_data(cfg.data, cfg.output_dir)
    sources: list[tuple[object, str]] = [(data.dataset, i) for i in [*data.labeled, *data.unlabeled]]
    counts = {"labeled": len(data.labeled), "unlabeled": len(data.unlabeled), "extra_pool": 0}
    if data.unlabeled_dataset is not None:
        extra = data.unlabeled_dataset
        sources += [(extra, i) for i in data.extra_unlabeled_ids]
        counts["extra_pool"] = len(data.extra_unlabeled_ids)
    size = predictor_size(cfg)
    pool = ImagePool(sources, size, cfg.data.normalize, resize=True, model_dims=len(size),
                     cache_mb=cfg.ssl.pool_cache_mb, channels=None)
    return pool, counts


def pretrain_encoder(cfg: RunConfig, out_path: str | Path, steps: int | None = None,
                     progress: bool | None = None, data: RunData | None = None) -> PretrainResult:
    """Pretrain the predictor's encoder of ``cfg.quality`` on the run's training images by restoration
    (see the module docstring) and write its state dict to ``out_path`` (``.pt``) plus ``<out_path>.json``."""
    from tqdm.auto import tqdm

    from ..engine.checkpoint import save_checkpoint

    p = cfg.quality.pretrain
    steps = int(steps if steps is not None else p.steps)
    if steps <= 0:
        raise ValueError(f"pretraining needs steps > 0, got {steps}")
    start = time.time()
    torch.manual_seed(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    pool, counts = pretrain_images(cfg, data)
    q = cfg.quality
    crop = [int(s) for s in (q.roi_size or pool.image_size)]
    first = pool.batch(torch.zeros(1, dtype=torch.long), gen)[0]
    channels = int(first.shape[1])
    net = RestorationNet(len(crop), channels, q.depth, q.width, no_max_pool=min(crop) < 64)
    opt = torch.optim.AdamW(net.parameters(), lr=p.lr, weight_decay=1e-4)
    warm = max(1, steps // 20)  # short warm-up, then cosine decay
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    show = cfg.runtime.progress if progress is None else progress
    losses: list[float] = []
    net.train()
    for _ in tqdm(range(steps), desc="pretrain encoder (restoration)", disable=not show, dynamic_ncols=True):
        idx = torch.randint(0, len(pool), (p.batch_size,), generator=gen)
        x = _random_crops(pool.batch(idx, gen)[0].float(), crop, gen)
        for d in range(2, x.ndim):  # flips: cheap geometric variety
            flip = torch.rand(x.shape[0], generator=gen) < 0.5
            x[flip] = x[flip].flip(d)
        loss = F.mse_loss(net(damage(x, gen)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    out_path = Path(out_path)
    save_checkpoint({"state_dict": net.backbone.state_dict()}, out_path)
    k = max(1, min(20, steps // 10))
    result = PretrainResult(str(out_path), "restoration (Models Genesis: intensity curve, pixel shuffling, "
                            "in-/out-painting; L2)", steps, p.batch_size, crop, len(pool), counts,
                            sum(losses[:k]) / k, sum(losses[-k:]) / k, time.time() - start)
    out_path.with_suffix(out_path.suffix + ".json").write_text(json.dumps(asdict(result), indent=1))
    return result
