"""A 30,000-image unlabeled pool on disk vs an in-memory pool of 1,500: peak memory and training speed.

    OMP_NUM_THREADS=1 python benchmarks/scale_pool.py [--work-dir /tmp/qgseg_scale_pool] [--steps 40]

Protocol: ``--n-pool`` RGB ``--size``x``--size`` PNGs of smooth random blobs (bicubic upsampling of
6x6 noise; PNG level 1) are generated once into ``<work-dir>/pool`` (never the repository; the
generation time is reported separately); the first ``--n-memory`` of them, hard-linked into
``<work-dir>/pool_small``, form the in-memory pool. A small RGB demo dataset gives the labeled and
validation cases. Each run is its own process: a short mean-teacher run (MONAI U-Net ``--features``
at ``--image-size``, ``--batch`` labeled + ``--batch`` unlabeled images, one CPU thread for the
training process), ``--warmup`` steps then ``--steps`` timed ones (steps/s = timed steps / their
wall time; the final validation is not timed); ``--repeats`` runs of each kind, alternated, with
the median steps/s and the largest peak memory reported.

* pool: the large pool read by ``--workers`` DataLoader workers (``ssl.pool_workers``), cache
  ``--cache-mb`` in total;
* in-memory: the small pool fully prepared into the cache before the first step, read in the
  training process (``ssl.pool_workers: 0``): no disk read during training.

Peak memory: the largest sum over the training process and its children (the workers) of their
resident set (VmRSS from /proc, sampled every 0.1 s), a conservative figure since forked workers
share pages with their parent; the proportional set (Pss, shared pages divided among the
processes) is reported beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from qgseg.config import load_config
from qgseg.data.demo import make_demo_dataset
from qgseg.engine.segmentation import SegmentationTrainer


# ----------------------------------------------------------------------------- data
def _write_images(args: tuple[str, int, int, int]) -> None:
    folder, start, stop, size = args
    for i in range(start, stop):
        path = Path(folder) / f"u{i:05d}.png"
        if path.is_file():
            continue
        small = np.random.default_rng(i).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        tmp = path.with_suffix(".tmp.png")  # why: an interrupted generation never leaves a truncated PNG
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(tmp, compress_level=1)
        tmp.rename(path)


def generate_pool(folder: Path, n: int, size: int, procs: int) -> float:
    """Write the missing images of ``folder`` (``u00000.png`` ...); seconds the whole pool took to
    generate (recorded beside it, so a rerun on an existing pool still reports it)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = folder.parent / f"generation_{n}.json"
    if record.is_file() and all((folder / f"u{i:05d}.png").is_file() for i in (0, n - 1)):
        return json.loads(record.read_text())["seconds"]
    start = time.time()
    chunks = [(str(folder), a, min(a + 500, n), size) for a in range(0, n, 500)]
    if procs > 1:
        with Pool(procs) as p:
            p.map(_write_images, chunks)
    else:
        for c in chunks:
            _write_images(c)
    seconds = time.time() - start
    record.write_text(json.dumps({"seconds": seconds, "images": n, "procs": procs}))
    return seconds


def link_subset(src: Path, dst: Path, n: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = dst / f"u{i:05d}.png"
        if not target.exists():
            os.link(src / f"u{i:05d}.png", target)


# ----------------------------------------------------------------------------- memory
def _proc_kb(pid: int, key: str, fname: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{fname}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


class PeakMemory(threading.Thread):
    """Samples the RSS and PSS sums of this process and its children."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every, self.rss_kb, self.pss_kb, self.running = every, 0, 0, True

    def run(self) -> None:
        while self.running:
            pids = [os.getpid(), *_children(os.getpid())]
            self.rss_kb = max(self.rss_kb, sum(_proc_kb(p, "VmRSS", "status") for p in pids))
            self.pss_kb = max(self.pss_kb, sum(_proc_kb(p, "Pss", "smaps_rollup") for p in pids))
            time.sleep(self.every)


# ----------------------------------------------------------------------------- one run (child process)
class TimedTrainer(SegmentationTrainer):
    """Records when each training step starts; optionally fills the pool's cache before training."""

    prefill = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_times: list[float] = []

    def training_step(self, iteration: int) -> dict[str, torch.Tensor]:
        self.step_times.append(time.perf_counter())
        return super().training_step(iteration)

    def load_unlabeled_pool(self):
        pool = super().load_unlabeled_pool()
        if self.prefill:
            gen = torch.Generator().manual_seed(0)
            for i in range(len(pool)):
                pool.sample(i, gen)
            assert pool.cached == len(pool), "the in-memory pool does not fit its cache"
        return pool


def run_child(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    mem = PeakMemory()
    mem.start()
    work = Path(a.work_dir)
    in_memory = a.child == "memory"
    steps = a.warmup + a.steps
    sets = [f"data.dataset={work / 'labeled'}", f"data.unlabeled={work / ('pool_small' if in_memory else 'pool')}",
            f"data.image_size=[{a.image_size},{a.image_size}]", f"model.features={a.features}",
            "ssl.method=mt", f"train.batch_size={a.batch}", f"ssl.unlabeled_batch_size={a.batch}",
            f"train.iterations={steps}", f"train.val_every={steps}", "runtime.progress=false",
            "runtime.accelerator=cpu", "eval.overlays=0", f"output_dir={work / 'runs'}", f"name={a.child}",
            f"ssl.pool_workers={0 if in_memory else a.workers}", f"ssl.pool_cache_mb={a.cache_mb}"]
    cfg = load_config(None, sets)
    TimedTrainer.prefill = in_memory
    trainer = TimedTrainer(cfg, work / "runs" / a.child)
    start = time.time()
    trainer.fit()
    t = trainer.step_times
    mem.running = False
    mem.join()
    pool = trainer.unlabeled_pool
    timed = len(t) - 1 - a.warmup  # steps between the first timed step's start and the last one's
    print("RESULT " + json.dumps({
        "steps_per_s": timed / (t[-1] - t[a.warmup]) if timed > 0 else float("nan"),
        "wall_s": time.time() - start, "peak_rss_gb": mem.rss_kb / 2 ** 20, "peak_pss_gb": mem.pss_kb / 2 ** 20,
        "pool_size": len(pool), "main_process_reads": pool.reads, "timed_steps": timed}))


def run(a: argparse.Namespace, which: str) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--work-dir", a.work_dir, "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--workers", str(a.workers), "--cache-mb", str(a.cache_mb),
           "--image-size", str(a.image_size), "--batch", str(a.batch), "--features", a.features]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the {which} run failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="/tmp/qgseg_scale_pool", help="generated data and runs (not the repo)")
    p.add_argument("--n-pool", type=int, default=30000)
    p.add_argument("--n-memory", type=int, default=1500)
    p.add_argument("--size", type=int, default=256, help="side of the generated images")
    p.add_argument("--gen-procs", type=int, default=1, help="processes generating the pool")
    p.add_argument("--image-size", type=int, default=128, help="training size")
    p.add_argument("--features", default="[16,32,64,128]")
    p.add_argument("--batch", type=int, default=8, help="labeled and unlabeled batch size")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=41, help="timed steps + 1 (their starts are timed)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache-mb", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternated (medians reported)")
    p.add_argument("--child", choices=["pool", "memory"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return run_child(a)
    work = Path(a.work_dir)
    gen_s = generate_pool(work / "pool", a.n_pool, a.size, a.gen_procs)
    print(f"pool: {a.n_pool} images in {work / 'pool'} ({gen_s:.0f} s to generate)")
    link_subset(work / "pool", work / "pool_small", a.n_memory)
    make_demo_dataset(work / "labeled", n_labeled=32, n_unlabeled=2, n_val=4, n_test=1,
                      size=(a.image_size, a.image_size), channels=3)
    disk_mb = sum(f.stat().st_size for f in (work / "pool").iterdir()) / 2 ** 20
    runs: dict[str, list[dict]] = {"memory": [], "pool": []}
    for _ in range(a.repeats):  # why alternated: on a shared machine the load drifts between runs
        for which, done in runs.items():
            done.append(run(a, which))
            print(f"{which}: {json.dumps(done[-1])}", flush=True)
    memory, pool = ({k: float(np.median([r[k] for r in runs[w]])) for k in runs[w][0]} for w in ("memory", "pool"))
    ratio = pool["steps_per_s"] / memory["steps_per_s"]
    result = {
        "peak_rss_gb": round(max(r["peak_rss_gb"] for r in runs["pool"]), 3),
        "steps_per_s": round(pool["steps_per_s"], 3), "steps_per_s_in_memory": round(memory["steps_per_s"], 3),
        "speed_ratio": round(ratio, 3), "peak_pss_gb": round(max(r["peak_pss_gb"] for r in runs["pool"]), 3),
        "peak_rss_gb_in_memory": round(max(r["peak_rss_gb"] for r in runs["memory"]), 3),
        "pool_images": a.n_pool, "pool_disk_mb": round(disk_mb), "in_memory_images": a.n_memory,
        "generation_s": round(gen_s, 1), "wall_s": round(sum(r["wall_s"] for v in runs.values() for r in v), 1),
        "runs": {"pool": runs["pool"], "in_memory": runs["memory"]},
        "settings": {k: v for k, v in vars(a).items() if k != "child"},
        "protocol": __doc__.split("Protocol: ", 1)[1].strip().replace("\n", " "),
    }
    rows = [("pool images (disk)", f"{a.n_pool} ({disk_mb:.0f} MB)"),
            ("peak RSS, pool run (GB; PSS)", f"{result['peak_rss_gb']} ({result['peak_pss_gb']})"),
            ("peak RSS, in-memory run (GB)", f"{result['peak_rss_gb_in_memory']}"),
            ("steps/s pool / in-memory",
             f"{result['steps_per_s']} / {result['steps_per_s_in_memory']} (ratio {ratio:.3f})"),
            ("generation (s)", f"{gen_s:.0f}")]
    print(write_result("scale_pool", result, rows, "Unlabeled pool at scale: 30,000 images on disk vs 1,500 in memory"))


if __name__ == "__main__":
    main()
