"""CPU thread defaults that stay fast on shared, busy machines.

Why: PyTorch's OpenMP threads busy-wait (spin) between parallel regions. When other processes
share the cores, the spinning threads take CPU time from the ones doing the work: on a shared
2-core machine a ResNet-18 batch-1 forward took 1,886 ms with PyTorch's defaults instead of
105 ms with one thread (``benchmarks/threads.py`` measures it). So the CLI

1. asks OpenMP to sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``; ``KMP_BLOCKTIME=0``
   for Intel's OpenMP), which only works if set before torch is imported, and
2. uses ``runtime.threads`` intra-op threads; unset (``null``), ``OMP_NUM_THREADS`` when the
   user (or ``qgseg compare``) set it, else ``min(available CPUs, 8)``: beyond ~8 threads the
   small networks and batches here gain little, and a shared server keeps cores for others.

A user's own environment values always win. Nothing here imports torch at module level
(``qgseg --help`` must stay fast).
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping

#: Environment defaults set by :func:`set_env_defaults` when absent.
WAIT_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
#: Upper bound of the default thread count.
MAX_DEFAULT_THREADS = 8


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM or taskset allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """``min(available CPUs, 8)``."""
    return min(available_cpus(), MAX_DEFAULT_THREADS)


def per_job_threads(jobs: int, environ: MutableMapping[str, str] | None = None) -> int:
    """Threads for each of ``jobs`` processes sharing this machine's CPUs (>= 1), never more than
    ``OMP_NUM_THREADS`` of ``environ`` (default ``os.environ``): a user's cap holds for the children too."""
    share = max(1, available_cpus() // max(1, jobs))
    cap = _env_threads(os.environ if environ is None else environ)
    return min(share, cap) if cap else share


def _env_threads(environ: MutableMapping[str, str]) -> int | None:
    value = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # OpenMP allows a per-level list
    return int(value) if value.isdigit() and int(value) > 0 else None


def set_env_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the passive wait policy and ``OMP_NUM_THREADS`` in ``environ`` (default ``os.environ``)
    where the user has not; returns what was set. Call before torch is imported: OpenMP reads
    these once, when it is loaded (child processes inherit them either way)."""
    environ = os.environ if environ is None else environ
    wanted = {**WAIT_ENV, "OMP_NUM_THREADS": str(default_threads())}
    added = {k: v for k, v in wanted.items() if k not in environ}
    environ.update(added)
    return added


def resolve_threads(configured: int | None, environ: MutableMapping[str, str] | None = None) -> int:
    """Intra-op threads: ``runtime.threads`` if set, else ``OMP_NUM_THREADS``, else :func:`default_threads`."""
    if configured is not None:
        return int(configured)
    return _env_threads(os.environ if environ is None else environ) or default_threads()


def apply_threads(configured: int | None) -> int:
    """``torch.set_num_threads(resolve_threads(configured))``; returns the count.

    DataLoader workers need nothing here: PyTorch sets one thread in each worker process.
    """
    import torch

    n = resolve_threads(configured)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
