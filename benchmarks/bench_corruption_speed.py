"""Generation speed of the variable-quality mask sampler on lesion-like 224x224 masks.

Run: ``python benchmarks/bench_corruption_speed.py [--device cpu] [--seconds 5] [--profile]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

import qgseg.quality.sampler as sampler_mod
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

    Keys ``masks_per_s_b{B}`` (wall clock) and, on CPU, ``cpu_masks_per_s_b{B}``: masks per second
    of this process's CPU time, which other processes on a shared machine do not lower. Each batch size runs for about ``seconds`` after one warm-up call,
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
    # at most 512 distinct masks (drawing them is a Python loop); big GPU batches repeat them
    pool = make_lesion_masks(min(max(batch_sizes) * 2, 512), size, seed=0, device=dev)
    p = pool.shape[0]
    gen = torch.Generator().manual_seed(0)
    res: dict[str, float] = {}
    for bs in batch_sizes:
        batches = [pool[(i * bs) % p:][:bs] if bs <= p // 2 else
                   pool[(i * bs + torch.arange(bs, device=dev)) % p] for i in range(8 if bs <= 1024 else 2)]
        batches = [bt if bt.shape[0] == bs else pool[:bs] for bt in batches]
        sampler.sample(batches[0], gen)  # warm-up
        n, it, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
        while True:
            sampler.sample(batches[it % len(batches)], gen)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            n += bs
            it += 1
            if time.perf_counter() - t0 >= seconds:
                break
        res[f"masks_per_s_b{bs}"] = n / (time.perf_counter() - t0)
        if dev.type == "cpu":
            res[f"cpu_masks_per_s_b{bs}"] = n / max(time.process_time() - c0, 1e-9)
    return res


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> Callable[[], float]:
    """CPU time of this process on CPU (other processes on a shared machine do not inflate it),
    wall time (after synchronising) on CUDA."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def _timed(fn: Callable[..., Any], acc: dict[str, float], key: str, device: torch.device) -> Callable[..., Any]:
    clock = _clock(device)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _sync(device)
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            _sync(device)
            acc[key] += clock() - t0

    return wrapper


@contextmanager
def _instrumented(acc: dict[str, float], device: torch.device) -> Iterator[None]:
    """Time every registered corruption, ``apply_corruption`` and the Dice target as the sampler calls them.

    Why patching: the profile must see the exact calls of ``VariableQualitySampler.sample``
    (grouped subsets, crops), not a synthetic loop. Nested corruptions (multiclass / volumetric
    wrappers) would be counted twice; the 2D single-class benchmark has none.
    """
    saved = dict(CORRUPTIONS)
    saved_apply, saved_dice = sampler_mod.apply_corruption, sampler_mod.dice_per_class
    for name, c in saved.items():
        CORRUPTIONS[name] = dataclasses.replace(c, fn=_timed(c.fn, acc, f"fn:{name}", device))
    sampler_mod.apply_corruption = _timed(saved_apply, acc, "apply_corruption", device)
    sampler_mod.dice_per_class = _timed(saved_dice, acc, "dice_target", device)
    try:
        yield
    finally:
        CORRUPTIONS.update(saved)
        sampler_mod.apply_corruption, sampler_mod.dice_per_class = saved_apply, saved_dice


def profile_sampler(size: int = 224, batch: int = 64, iterations: int = 20, device: str = "cpu",
                    config: SamplerConfig | None = None, top: int = 10) -> dict[str, Any]:
    """Where the time of ``VariableQualitySampler.sample`` goes, at the current thread setting.

    Times are process CPU time on CPU (see :func:`_clock`). Returns ``ms_per_batch`` and shares (fractions of the total) per corruption category, for the
    Dice target, for ``apply_corruption`` around the corruption itself (crop, clamp) and for the
    sampler's own work (category draw, grouping, indexing, swap), plus the ``top`` corruptions.
    """
    dev = torch.device(device)
    sampler = VariableQualitySampler(config or SamplerConfig(), spatial_dims=2, num_classes=1)
    pool = make_lesion_masks(batch * 2, size, seed=0, device=dev)
    gen = torch.Generator().manual_seed(0)
    sampler.sample(pool[:batch], gen)  # warm-up
    acc: dict[str, float] = defaultdict(float)
    clock = _clock(dev)
    with _instrumented(acc, dev):
        _sync(dev)
        t0 = clock()
        for it in range(iterations):
            sampler.sample(pool[(it % 2) * batch:][:batch], gen)
        _sync(dev)
        total = clock() - t0
    fn_s = {k[3:]: v for k, v in acc.items() if k.startswith("fn:")}
    by_cat: dict[str, float] = defaultdict(float)
    for name, v in fn_s.items():
        by_cat[CORRUPTIONS[name].category] += v
    parts = {f"corruptions/{c}": v for c, v in by_cat.items()}
    parts["dice_target"] = acc["dice_target"]
    parts["apply_corruption_overhead"] = acc["apply_corruption"] - sum(fn_s.values())
    parts["sampler_other"] = total - acc["apply_corruption"] - acc["dice_target"]
    return {
        "batch": batch, "iterations": iterations, "torch_threads": torch.get_num_threads(),
        "clock": "wall" if dev.type == "cuda" else "process CPU time",
        "ms_per_batch": 1000 * total / iterations,
        "share": {k: round(v / total, 4) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
        "top_corruptions_ms_per_batch": {k: round(1000 * v / iterations, 3)
                                         for k, v in sorted(fn_s.items(), key=lambda kv: -kv[1])[:top]},
    }


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
    ap.add_argument("--profile", action="store_true", help="also print ms/mask per corruption and the sampler profile")
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
        prof = profile_sampler(args.size, device=args.device)
        print(f"sampler batch {prof['batch']}: {prof['ms_per_batch']:.1f} ms/batch")
        for k, v in prof["share"].items():
            print(f"  {k:32s} {100 * v:5.1f} %")
        for k, v in prof["top_corruptions_ms_per_batch"].items():
            print(f"  {k:18s} {v:7.2f} ms/batch")
