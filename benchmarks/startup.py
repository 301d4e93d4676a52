"""Start-up time of the ``qgseg`` command line: ``--help``, the package import, first output line.

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--repeats 5]

Protocol: each command runs in a fresh Python process (the OS file cache is warm after the
first run, so this is "cold-ish": no byte-code or page-cache effects of a first install);
median wall seconds of ``--repeats`` runs. ``help_s_median``: ``qgseg --help``;
``subcommand_help_s``: ``qgseg train --help`` / ``qgseg quality score --help``;
``import_qgseg_s``: ``python -c "import qgseg.cli.main"`` (what every command pays before it
starts) next to ``python -c pass`` (the interpreter alone) and ``import qgseg.pipeline`` (torch,
MONAI and Lightning: what a command that trains or predicts pays once it starts);
``heavy_modules_on_help``: any of torch / monai / lightning that ``--help`` imports (should be
none, ``python -X importtime``); ``first_line_evaluate_s``: from starting
``qgseg evaluate --checkpoint <untrained demo U-Net> <demo data> --split all`` to its first line
on stdout/stderr (a progress bar counts), and ``evaluate_total_s`` to its exit, on the
built-in demo dataset (``make_demo_dataset`` defaults: 40 labeled 96x96 images) in a temporary folder.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

HEAVY = ("torch", "monai", "lightning")
PY = sys.executable


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def median_wall(cmd: list[str], repeats: int) -> float:
    return statistics.median(wall(cmd) for _ in range(repeats))


def heavy_imports(args: list[str]) -> list[str]:
    """Heavy top-level packages imported by ``qgseg <args>`` (``-X importtime`` report)."""
    out = subprocess.run([PY, "-X", "importtime", "-m", "qgseg.cli.main", *args], capture_output=True, text=True,
                         check=True)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    return sorted(n for n in names if n in HEAVY)


def first_line(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds to the first output line or progress-bar update, seconds to exit, that line)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = b""
    first = None
    while True:
        ch = proc.stdout.read(1)
        if not ch:
            break
        if ch in (b"\n", b"\r"):
            if buf.strip() and first is None:
                first = (time.perf_counter() - t, buf.decode(errors="replace").strip())
            buf = b""
        else:
            buf += ch
    proc.wait()
    total = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return (first or (total, ""))[0], total, (first or (0, ""))[1]


def demo_checkpoint(root: Path) -> tuple[Path, Path]:
    """The demo dataset and an untrained U-Net of the demo preset's architecture (same cost)."""
    import torch

    from qgseg.config import load_config
    from qgseg.data.demo import make_demo_dataset
    from qgseg.engine.checkpoint import save_checkpoint
    from qgseg.evaluation.inference import ModelSpec

    cfg = load_config("demo")
    data = make_demo_dataset(root / "demo")
    torch.manual_seed(0)
    spec = ModelSpec(cfg.model.name, 2, 1, ["background", "lesion"], cfg.data.image_size,
                     features=cfg.model.features)
    ckpt = save_checkpoint({"model": spec.build().state_dict(), "meta": {"spec": spec.to_dict(),
                                                                         "task": "segmentation"}},
                           root / "demo.ckpt")
    return data, ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    start = time.time()
    cli = [PY, "-m", "qgseg.cli.main"]
    result = {
        "help_s_median": median_wall(cli + ["--help"], args.repeats),
        "subcommand_help_s": {name: median_wall(cli + name.split() + ["--help"], args.repeats)
                              for name in ("train", "quality score")},
        "python_startup_s": median_wall([PY, "-c", "pass"], args.repeats),
        "import_qgseg_s": median_wall([PY, "-c", "import qgseg.cli.main"], args.repeats),
        "import_pipeline_s": median_wall([PY, "-c", "import qgseg.pipeline"], args.repeats),
        "heavy_modules_on_help": sorted(set(heavy_imports(["--help"])) | set(heavy_imports(["train", "--help"]))
                                        | set(heavy_imports(["quality", "score", "--help"]))),
        "target_help_s": 3.0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data, ckpt = demo_checkpoint(Path(tmp))
        runs = [first_line(cli + ["evaluate", "--checkpoint", str(ckpt), str(data), "--split", "all",
                                  "--device", "cpu"]) for _ in range(min(args.repeats, 3))]
    result["first_line_evaluate_s"] = statistics.median(r[0] for r in runs)
    result["evaluate_total_s"] = statistics.median(r[1] for r in runs)
    result["evaluate_first_line"] = runs[-1][2][:120]
    result["protocol"] = (__doc__.split("Protocol: ", 1)[1].replace("\n", " ").strip()
                          + f" Repeats: {args.repeats} (evaluate: {len(runs)}).")
    result["wall_s"] = time.time() - start
    rows = [("qgseg --help (median s)", f"{result['help_s_median']:.3f} (target < 3)"),
            *[(f"qgseg {k} --help (s)", f"{v:.3f}") for k, v in result["subcommand_help_s"].items()],
            ("python -c pass (s)", f"{result['python_startup_s']:.3f}"),
            ("import qgseg.cli.main (s)", f"{result['import_qgseg_s']:.3f}"),
            ("import qgseg.pipeline: torch + MONAI + Lightning (s)", f"{result['import_pipeline_s']:.3f}"),
            ("heavy modules imported by --help", ", ".join(result["heavy_modules_on_help"]) or "none"),
            ("qgseg evaluate: first output line (s)", f"{result['first_line_evaluate_s']:.2f}"),
            ("qgseg evaluate: first line", f"`{result['evaluate_first_line']}`"),
            ("qgseg evaluate: total (s)", f"{result['evaluate_total_s']:.2f}")]
    path = write_result("startup", result, rows, "Start-up time of the qgseg command line")
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
