"""``qgseg predict`` on a clinical-size CT-like volume (512x512x300) on the CPU: peak memory and time.

    OMP_NUM_THREADS=1 python benchmarks/scale_3d.py [--work-dir /tmp/qgseg_scale_3d] [--shape 512 512 300]

Protocol: a ``--shape`` int16 NIfTI volume (1 mm voxels, z-spacing 2.5 mm) of smooth noise with a
few bright ellipsoids (one per foreground class) is generated once into ``<work-dir>`` (never the
repository). A 3D MONAI U-Net (``--features``, ``--classes`` classes incl. background) trained on
``--patch`` patches (``data.resize: false``) is saved as a checkpoint with random initial weights:
the cost of prediction does not depend on the weights (sliding windows of ``--patch``, overlap
0.25, Gaussian blending, 4 windows per batch: ``qgseg predict``'s defaults). ``qgseg predict`` then
runs in its own process with ``OMP_NUM_THREADS`` threads; ``wall_s`` is that process's wall time
(reading the .nii.gz, prediction, writing the mask), ``peak_rss_gb`` its peak resident set
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the largest child waited for; only that process is a
child). The machine's load average at the start and end is recorded: the CPUs may be shared.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from qgseg.engine.checkpoint import save_checkpoint
from qgseg.evaluation.inference import ModelSpec


def make_volume(path: Path, shape: tuple[int, int, int], classes: int, seed: int = 0) -> float:
    """Write the test volume (X, Y, Z order, int16 CT-like values) unless it exists; seconds taken."""
    if path.is_file():
        return 0.0
    start = time.time()
    rng = np.random.default_rng(seed)
    # smooth background: coarse noise upsampled by repetition (cheap at 78 M voxels)
    coarse = rng.normal(0, 40, (shape[0] // 16 + 1, shape[1] // 16 + 1, shape[2] // 8 + 1)).astype(np.float32)
    vol = coarse.repeat(16, 0).repeat(16, 1).repeat(8, 2)[:shape[0], :shape[1], :shape[2]]
    vol = vol + 20 * rng.standard_normal(shape, dtype=np.float32)  # voxel noise
    vol = (vol - 900).astype(np.int16)  # soft-tissue-like Hounsfield units
    x, y, z = np.ogrid[:shape[0], :shape[1], :shape[2]]
    for k in range(1, classes):  # one ellipsoid per foreground class, brighter than the background
        c = rng.uniform(0.3, 0.7, 3) * np.array(shape)
        r = rng.uniform(0.08, 0.2, 3) * np.array(shape)
        inside = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1
        vol[inside] += np.int16(100 * k)
    tmp = path.with_name(".tmp_" + path.name)  # why: an interrupted write never leaves a truncated volume
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.5, 1.0])), tmp)
    tmp.rename(path)
    return time.time() - start


def make_checkpoint(path: Path, patch: list[int], features: list[int], classes: int) -> Path:
    """A segmentation checkpoint of an untrained 3D U-Net made for ``patch`` patches."""
    spec = ModelSpec(name="unet", spatial_dims=3, in_channels=1, classes=["background"] + [f"c{k}" for k in
                     range(1, classes)], image_size=patch, resize=False, normalize="zscore", features=features)
    torch.manual_seed(0)
    model = spec.build()
    return save_checkpoint({"model": model.state_dict(), "meta": {"spec": spec.to_dict(), "task": "segmentation"}},
                           path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="/tmp/qgseg_scale_3d", help="generated volume, checkpoint, masks")
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    p.add_argument("--patch", type=int, nargs=3, default=[96, 96, 96])
    p.add_argument("--features", default="16,32,64,128")
    p.add_argument("--classes", type=int, default=4, help="classes incl. background")
    p.add_argument("--name", default="scale_3d", help="result name under benchmarks/results")
    a = p.parse_args()
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(a.shape)
    image = work / f"ct_{'x'.join(map(str, shape))}.nii.gz"
    gen_s = make_volume(image, shape, a.classes)
    features = [int(f) for f in a.features.split(",")]
    ckpt = make_checkpoint(work / "unet3d.ckpt", list(a.patch), features, a.classes)
    out = work / "pred"
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    cmd = [str(Path(sys.executable).with_name("qgseg")), "predict", "--checkpoint", str(ckpt), "--input", str(image),
           "--output", str(out), "--device", "cpu", "--overwrite"]
    load_before = os.getloadavg()
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    if run.returncode != 0:
        raise SystemExit(f"qgseg predict failed ({run.returncode}):\n{run.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # ru_maxrss is in KiB on Linux
    mask = np.asarray(nib.load(out / image.name).dataobj)
    if mask.shape != shape:
        raise SystemExit(f"the predicted mask has shape {mask.shape}, expected {shape}")
    voxels = int(np.prod(shape))
    result = {
        "peak_rss_gb": round(peak_gb, 3), "wall_s": round(wall, 1), "shape": list(shape), "voxels": voxels,
        "patch": list(a.patch), "features": features, "classes": a.classes, "omp_num_threads": threads,
        "volume_mb": round(image.stat().st_size / 2 ** 20, 1), "generation_s": round(gen_s, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after], "cpu": os.cpu_count(),
        "protocol": " ".join((__doc__ or "").split("\n\n")[2].split()).removeprefix("Protocol: "),
        "predict_command": " ".join(cmd),
    }
    rows = [("volume", f"{'x'.join(map(str, shape))} int16 NIfTI ({voxels / 1e6:.1f} M voxels)"),
            ("model", f"3D U-Net {features}, {a.classes} classes, patches {a.patch}"),
            ("peak RSS of qgseg predict", f"{peak_gb:.2f} GB"), ("wall time", f"{wall:.1f} s"),
            ("threads (OMP_NUM_THREADS)", threads),
            ("load average before / after", f"{load_before[0]:.2f} / {load_after[0]:.2f} ({os.cpu_count()} CPUs)")]
    path = write_result(a.name, result, rows, "qgseg predict on a clinical-size 3D volume (CPU)")
    print(f"peak RSS {peak_gb:.2f} GB, wall {wall:.1f} s -> {path}")


if __name__ == "__main__":
    main()
