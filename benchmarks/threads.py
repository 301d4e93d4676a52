"""CPU thread defaults on a busy machine: ResNet-18 batch-1 forward latency with PyTorch's
default threading vs qgseg's defaults (:mod:`qgseg.threads`), next to an extra busy process or not.

    python benchmarks/threads.py [--calls 15] [--size 224]

Protocol: every setting runs in a fresh Python process (OpenMP reads its environment once, when
torch is loaded). ``torch default``: the child's environment has no OMP_NUM_THREADS /
OMP_WAIT_POLICY / KMP_BLOCKTIME / MKL_NUM_THREADS, so PyTorch picks its thread count and OpenMP
spins between parallel regions; ``qgseg default``: what the CLI does (``set_env_defaults()``
before torch is imported, then ``apply_threads(runtime.threads=None)``); ``qgseg_threads1``: the
same with ``runtime.threads=1`` (the alternative default on a small shared machine). The model is MONAI's
ResNet-18 (2D, 3 input channels, 1 output: the quality predictor's backbone) in eval mode under
``torch.inference_mode``, input 1x3xSIZExSIZE; median (and min/max) of ``--calls`` forwards
after 3 warm-up calls. ``busy``: one extra process spinning a pure-Python loop runs for the
whole measurement. The load average (1 min) is recorded before each setting: the machine this
ran on is shared, so "idle" means "without the extra process", not an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_result

THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")

CHILD = r"""
import json, statistics, sys, time
mode, calls, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode.startswith("qgseg"):
    from qgseg.threads import apply_threads, set_env_defaults
    set_env_defaults()
import torch
from monai.networks.nets import resnet18
if mode.startswith("qgseg"):
    apply_threads(1 if mode == "qgseg_threads1" else None)
import os
net = resnet18(spatial_dims=2, n_input_channels=3, num_classes=1).eval()
x = torch.randn(1, 3, size, size)
times = []
with torch.inference_mode():
    for i in range(calls + 3):
        t0 = time.perf_counter()
        net(x)
        if i >= 3:
            times.append(1000 * (time.perf_counter() - t0))
print(json.dumps({"threads": torch.get_num_threads(), "median_ms": statistics.median(times), "min_ms": min(times),
                  "max_ms": max(times), "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                                               "KMP_BLOCKTIME")}}))
"""


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def measure(mode: str, busy: bool, calls: int, size: int) -> dict:
    """One setting in a fresh process; ``busy`` starts a CPU-burning process beside it."""
    burner = None
    if busy:
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=_child_env())
        time.sleep(1.0)  # let it get scheduled before the measurement starts
    try:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(calls), str(size)], env=_child_env(),
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return {**res, "busy": busy, "mode": mode, "loadavg_1min_before": load, "process_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    start = time.time()
    settings = {}
    for busy in (False, True):
        for mode in ("torch", "qgseg", "qgseg_threads1"):
            key = f"{mode}{'' if mode.endswith('1') else '_default'}_{'busy' if busy else 'idle'}"
            settings[key] = measure(mode, busy, args.calls, args.size)
            print(key, json.dumps(settings[key]))
    from qgseg.threads import available_cpus

    out = {"settings": settings, "available_cpus": available_cpus(), "cpu_count": os.cpu_count(),
           "wall_s": time.time() - start,
           "protocol": (f"MONAI ResNet-18 (2D, 3->1), batch 1, {args.size}x{args.size}, median of {args.calls} "
                        "forwards after 3 warm-up, each setting in a fresh process; torch default = no thread env "
                        "vars; qgseg default = qgseg.threads.set_env_defaults() before torch + apply_threads(None); "
                        "qgseg_threads1 = the same with runtime.threads=1; "
                        "busy = one extra pure-Python spinning process; the machine is shared (see loadavg)")}
    rows = [(k, (f"{v['median_ms']:.0f} ms (min {v['min_ms']:.0f}, max {v['max_ms']:.0f}; {v['threads']} threads, "
                 f"load {v['loadavg_1min_before']:.1f})")) for k, v in settings.items()]
    path = write_result("threads", out, rows, "CPU thread defaults: ResNet-18 batch-1 forward latency")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
