"""Speed of phase 1: mask generation (batch 1 / 64 at 224x224), predictor training images/s,
and the fraction of predictor-training wall time spent generating masks (target < 20%).

Mask generation (``VariableQualitySampler.sample``, Dice target included) is measured at the
current torch thread setting (``masks_per_s_b1`` / ``_b64``), at batch 64 on one CPU thread
(``masks_per_s_b64_1thread``; goal: >= 794 masks/s, the published per-mask OpenCV generator on
one thread), and on one GPU when there is one (``masks_per_s_gpu``, goal >= 30,000; the best of
batch 64 / 1024 / 4096), with ``profile``: where the time of a batch of 64 goes on one thread.
On a shared machine wall-clock rates depend on the other processes: ``cpu_masks_per_s_*`` divide
by this process's CPU time instead, and ``loadavg_1min`` is recorded.

    python benchmarks/quality_speed.py --data-root ../shared/data

Predictor training is measured on PH2 at the published design (224x224, ResNet-18, standard
width, batch 32; falls back to the demo data when PH2 is absent) for a fixed number of
iterations through the real :class:`QualityTrainer`, with the sampler timed inside the steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_corruption_speed import measure_generation_speed, profile_sampler  # noqa: E402
from common import DEFAULT_DATA_ROOT, write_result  # noqa: E402

from qgseg.config import load_config  # noqa: E402
from qgseg.quality.training import QualityTrainer  # noqa: E402


class _TimedSampler:
    """Wraps the trainer's sampler and accumulates the seconds spent generating masks."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds, self.masks = inner, 0.0, 0

    def _timed(self, fn, masks, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(masks, *args, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.masks += masks.shape[0]
        return out

    def sample(self, masks, *args, **kwargs):
        return self._timed(self.inner.sample, masks, *args, **kwargs)

    def balanced_sample(self, masks, *args, **kwargs):
        return self._timed(self.inner.balanced_sample, masks, *args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profile-iterations", type=int, default=20)
    args = parser.parse_args()
    start = time.time()
    load_before = os.getloadavg()[0]
    gen_speed = measure_generation_speed(size=224, batch_sizes=(1, 64), seconds=args.seconds, num_threads=None)
    one = measure_generation_speed(size=224, batch_sizes=(64,), seconds=args.seconds, num_threads=1)
    gen_speed.update(masks_per_s_b64_1thread=one["masks_per_s_b64"],
                     cpu_masks_per_s_b64_1thread=one["cpu_masks_per_s_b64"])
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile = profile_sampler(size=224, batch=64, iterations=args.profile_iterations)
    finally:
        torch.set_num_threads(threads_before)
    if torch.cuda.is_available():
        gpu = measure_generation_speed(size=224, batch_sizes=(64, 1024, 4096), seconds=args.seconds, device="cuda",
                                       num_threads=None)
        gen_speed.update(masks_per_s_gpu=max(gpu.values()), gpu=gpu, gpu_name=torch.cuda.get_device_name())
    else:
        gen_speed.update(masks_per_s_gpu=None, masks_per_s_gpu_reason="no CUDA device on this machine (the CUDA "
                         "path is exercised by tests/test_corruption_speed.py::test_sampler_runs_on_cuda when one is)")

    ph2 = Path(args.data_root) / "PH2"
    dataset = ["data.dataset=PH2", f"data.root={args.data_root}"] if ph2.is_dir() else ["data.dataset=demo"]
    cfg = load_config("quality_ph2", dataset + [
        "output_dir=/tmp/qgseg_quality_speed", "runtime.progress=false", "data.image_size=[224,224]",
        "quality.image_size=[224,224]", "quality.width=null", f"quality.batch_size={args.batch_size}",
        "quality.weak_probability=0.0", "data.max_cases=64", "quality.masks_per_image=1", "quality.epochs=1000",
        "quality.early_stop_patience=null", "quality.val_every_epochs=1000"])
    trainer = QualityTrainer(cfg, Path(cfg.output_dir) / "speed")
    trainer.setup()
    trainer.iterations = trainer.cfg.train.iterations = args.iterations  # fixed budget, no validation
    trainer.val_every = trainer.checkpoint_every = args.iterations
    trainer.sampler = timed = _TimedSampler(trainer.sampler)
    trainer.validate = lambda model: {"val/mae": 0.0}  # noqa: E731  (speed only)
    t0 = time.perf_counter()
    trainer.fit()
    train_s = time.perf_counter() - t0
    images = args.iterations * args.batch_size
    out = {**gen_speed, "profile": profile, "loadavg_1min": load_before, "predictor_img_per_s": images / train_s, "generation_fraction": timed.seconds / train_s,
           "generation_s": timed.seconds, "train_s": train_s, "torch_threads": torch.get_num_threads(),
           "wall_s": time.time() - start,
           "protocol": (f"generation: VariableQualitySampler.sample on 224x224 lesion-like masks, default category "
                        f"mix, {args.seconds:.0f} s per batch size; training: QualityTrainer on "
                        f"{'PH2' if ph2.is_dir() else 'demo'} at 224x224, ResNet-18 standard width"
                        f"{' + truth-map decoder' if cfg.quality.truth_map_weight > 0 else ''}, batch "
                        f"{args.batch_size}, {args.iterations} iterations incl. augmentation and optimiser, "
                        f"CPU ({torch.get_num_threads()} threads)")}
    gpu_row = f"{out['masks_per_s_gpu']:.0f}" if out["masks_per_s_gpu"] else f"n/a: {out.get('masks_per_s_gpu_reason')}"
    rows = [("masks/s batch 1", f"{out['masks_per_s_b1']:.1f}"), ("masks/s batch 64", f"{out['masks_per_s_b64']:.1f}"),
            ("masks/s batch 64, 1 thread (goal >= 794)", (f"{out['masks_per_s_b64_1thread']:.1f} wall, "
                                                           f"{out['cpu_masks_per_s_b64_1thread']:.1f} per CPU second")),
            ("masks/s on one GPU (goal >= 30,000)", gpu_row),
            ("1-thread profile, batch 64", ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(profile["share"].items())[:6])),
            ("predictor training img/s", f"{out['predictor_img_per_s']:.1f}"),
            ("generation fraction of training time", f"{out['generation_fraction']:.3f}"),
            ("wall s", f"{out['wall_s']:.0f}")]
    path = write_result("quality_speed", out, rows, "Quality predictor: speed")
    print("\n".join(f"{k}: {v}" for k, v in rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
