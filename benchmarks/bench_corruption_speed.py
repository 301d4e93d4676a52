"""Generation speed of the variable-quality mask sampler on lesion-like 224x224 masks.

Run: ``python benchmarks/bench_corruption_speed.py [--device cpu] [--seconds 5] [--profile]``.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor

from qgseg.quality.corruptions import CORRUPTIONS, apply_corruption
from qgseg.quality.sampler import SamplerConfig, VariableQualitySampler


def make_lesion_masks(n: int, size: int = 224, seed: int = 0, device: str | torch.device = "cpu") -> Tensor:
    """Realistic-ish lesion masks (n, 1, size, size): 1-3 irregular blobs (radius 4-25% of the
    image, boundary wobble from a few angular harmonics); ~8% of the masks are empty."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        if torch.rand(1, generator=g) < 0.08:
            continue
        nblob = 1 + int(torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), 1, generator=g))
        for j in range(nblob):
            r = size * (0.04 + 0.21 * float(torch.rand(1, generator=g))) * (0.5 if j else 1.0)
            cy, cx = (size * (0.25 + 0.5 * torch.rand(2, generator=g))).tolist()
            theta = torch.atan2(yy - cy, xx - cx)
            rad = torch.full_like(theta, r)
            for h in range(2, 6):
                amp, ph = 0.12 / h * float(torch.rand(1, generator=g)), 2 * math.pi * float(torch.rand(1, generator=g))
                rad = rad * (1 + amp * torch.cos(h * theta + ph))
            ecc = 0.6 + 0.4 * float(torch.rand(1, generator=g))
            dist = ((yy - cy) ** 2 + ((xx - cx) * ecc) ** 2).sqrt()
            out[i, 0] = torch.maximum(out[i, 0], (dist <= rad).float())
    return out.to(device)


def measure_generation_speed(size: int = 224, batch_sizes: tuple[int, ...] = (1, 64), seconds: float = 5.0,
                             device: str = "cpu", config: SamplerConfig | None = None,
                             num_threads: int | None = 1) -> dict[str, float]:
    """Masks per second of ``VariableQualitySampler.sample`` for each batch size.

    Keys ``masks_per_s_b{B}``. Each batch size runs for about ``seconds`` after one warm-up call,
    cycling over a pool of lesion masks so every call sees different shapes.
    ``num_threads``: torch intra-op threads during the measurement (restored afterwards); 1 by
    default because generation runs in data-loader workers (which use 1 thread) beside training,
    and on a loaded 2-core machine 2 threads were measured 6x *slower* than 1 (OpenMP contention).
    None keeps the current setting.
    """
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _measure(size, batch_sizes, seconds, device, config)
    finally:
        torch.set_num_threads(before)


def _measure(size: int, batch_sizes: tuple[int, ...], seconds: float, device: str,
             config: SamplerConfig | None) -> dict[str, float]:
    dev = torch.device(device)
    sampler = VariableQualitySampler(config or SamplerConfig(), spatial_dims=2, num_classes=1)
    pool = make_lesion_masks(max(batch_sizes) * 2, size, seed=0, device=dev)
    gen = torch.Generator().manual_seed(0)
    res: dict[str, float] = {}
    for bs in batch_sizes:
        batches = [pool[(i * bs) % pool.shape[0]:][:bs] for i in range(8)]
        batches = [bt if bt.shape[0] == bs else pool[:bs] for bt in batches]
        sampler.sample(batches[0], gen)  # warm-up
        n, it, t0 = 0, 0, time.perf_counter()
        while True:
            sampler.sample(batches[it % len(batches)], gen)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            n += bs
            it += 1
            if time.perf_counter() - t0 >= seconds:
                break
        res[f"masks_per_s_b{bs}"] = n / (time.perf_counter() - t0)
    return res


def profile_corruptions(size: int = 224, batch: int = 8, device: str = "cpu", repeats: int = 3) -> dict[str, float]:
    """Milliseconds per mask of each 2D single-class corruption (helps spot slow ones)."""
    masks = make_lesion_masks(batch, size, seed=1, device=device)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, c in CORRUPTIONS.items():
        if not c.applicable(2, 1):
            continue
        apply_corruption(name, masks, gen)
        t0 = time.perf_counter()
        for _ in range(repeats):
            apply_corruption(name, masks, gen)
        out[name] = 1000 * (time.perf_counter() - t0) / (repeats * batch)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = leave as is)")
    ap.add_argument("--profile", action="store_true", help="also print ms/mask per corruption")
    args = ap.parse_args()
    threads = args.threads or None
    print(f"torch threads: {threads or torch.get_num_threads()}")
    for k, v in measure_generation_speed(args.size, seconds=args.seconds, device=args.device,
                                         num_threads=threads).items():
        print(f"{k}: {v:.1f}")
    if threads:
        torch.set_num_threads(threads)
    if args.profile:
        for k, v in sorted(profile_corruptions(args.size, device=args.device).items(), key=lambda kv: -kv[1]):
            print(f"{k:18s} {v:7.2f} ms/mask")
