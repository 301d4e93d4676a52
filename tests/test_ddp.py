"""Distributed training on 2 CPU processes (gloo, started by Fabric): every SSL method, guided MT-QW and CPS;
only rank 0 writes files, validation is reduced across ranks, kill + resume is exact; GPU slots of
``qgseg compare --jobs``; mixed precision constructs on CPU (the CUDA paths run in benchmarks/gpu_paths.py).

Which process writes what is recorded by an audit hook (``sitecustomize`` on ``PYTHONPATH``, so the
process Fabric starts for rank 1 has it too): every file opened for writing, created, renamed or
removed under the output folder, per rank.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_dataset
from test_guidance import _cfg

from qgseg.data.run_data import prepare_run_data
from qgseg.engine import load_checkpoint
from qgseg.ssl import METHODS

HERE = Path(__file__).parent

AUDIT_HOOK = '''
import atexit, json, os, sys

_root = os.environ.get("QGSEG_AUDIT_ROOT")
if _root:
    _rank = os.environ.get("LOCAL_RANK", "0")  # set at start for the processes Fabric launches; rank 0 has none
    _seen = []
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE)
            paths = [path] if writes else []
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.replace", "shutil.rmtree"):
            paths = list(args[:2]) if event in ("os.rename", "os.replace") else [args[0]]
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and os.fsdecode(p).startswith(_root):
                _seen.append(f"{event} {os.fsdecode(p)}")

    def _dump():
        with open(os.path.join(os.environ["QGSEG_AUDIT_OUT"], f"rank{_rank}-{os.getpid()}.json"), "w") as fh:
            json.dump(sorted(set(_seen)), fh)

    sys.addaudithook(_hook)
    atexit.register(_dump)
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """6 labeled, 6 unlabeled, 3 validation cases (so 2 ranks validate 2 and 1) and a tiny predictor g."""
    from qgseg.quality.training import train_quality_predictor

    root = tmp_path_factory.mktemp("ddp")
    data_dir = tiny_dataset(root / "data", n_labeled=6, n_unlabeled=6, n_val=3)
    cfg = _cfg(data_dir, root)
    q = train_quality_predictor(cfg, root / "quality", data=prepare_run_data(cfg.data, cfg.output_dir),
                                evaluate=False)
    return {"data": data_dir, "predictor": q["checkpoint"]}


def _audited_env(tmp_path: Path, root: Path) -> tuple[dict[str, str], Path]:
    site, audit = tmp_path / "audit_site", tmp_path / "audit"
    site.mkdir(exist_ok=True)
    audit.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "QGSEG_AUDIT_ROOT": str(root), "QGSEG_AUDIT_OUT": str(audit), "OMP_NUM_THREADS": "1"}
    return env, audit


def _writes_by_rank(audit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in audit.glob("rank*.json"):
        out.setdefault(f.name.split("-")[0], []).extend(json.loads(f.read_text()))
    return out


def _base(tiny, out: Path) -> list[str]:
    return [f"data.dataset={tiny['data']}", f"output_dir={out}", "data.image_size=[32,32]", "model.features=[8,16,32]",
            "train.batch_size=2", "runtime.progress=false", "runtime.accelerator=cpu", "runtime.devices=2",
            "runtime.strategy=ddp", "ssl.unlabeled_batch_size=2", f"guidance.predictor={tiny['predictor']}",
            "guidance.qar_start=0"]


GUIDED = {"mt-qw": ["ssl.method=mt", "guidance.qw=true"], "cps": ["ssl.method=cps"]}


def test_every_method_guidance_and_resume_under_two_process_ddp(tiny, tmp_path):
    """One 2-process group runs: every registered method and MT-QW+QAR for 2 iterations; MT-QW and CPS
    for 4 iterations whole, and killed after 3 then resumed (must give the same weights and teacher)."""
    out = tmp_path / "runs"
    out.mkdir()
    short = ["train.iterations=2", "train.val_every=2"]
    runs = [{"name": m, "set": [*short, f"ssl.method={m}"]} for m in METHODS]
    runs.append({"name": "mt-qw+qar", "set": [*short, "ssl.method=mt", "guidance.qw=true", "guidance.qar=true"]})
    resumable = ["train.iterations=4", "train.val_every=2", "train.checkpoint_every=2", "train.deterministic=true"]
    for name, sets in GUIDED.items():
        runs += [{"name": f"{name}-full", "set": [*resumable, *sets]},
                 {"name": f"{name}-killed", "set": [*resumable, *sets], "stop_after": 3},
                 {"name": f"{name}-killed", "set": [*resumable, *sets], "resume": True}]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": _base(tiny, out), "out": str(out), "runs": runs}))
    env, audit = _audited_env(tmp_path, out)
    proc = subprocess.run([sys.executable, str(HERE / "ddp_driver.py"), str(spec)], check=False, capture_output=True,
                          text=True, timeout=600, env=env, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    for run in result["runs"].values():  # the resumed run replaced the killed one's entry
        assert run["iterations"] == (2 if run["history"][-1]["iteration"] == 2 else 4) and not run["interrupted"]
        # DDP keeps every trained network, and so the EMA teachers made from them, equal on every rank
        assert all(run["same_on_every_rank"].values()), run["same_on_every_rank"]
        # ... with one buffer broadcast per step (BaseTrainer._sync_buffers), not DDP's one per forward
        assert run["ddp_broadcasts_buffers"] is False
        assert run["val_cases_per_rank"] == [2, 1]
    assert {r["method"] for r in result["runs"].values()} >= set(METHODS) | {"mt-qw+qar"}
    assert result["runs"]["cps"]["same_on_every_rank"].keys() == {"student", "student_b", "method"}

    # validation is over all 3 cases (sums reduced across ranks): best.ckpt's Dice on all of them, here
    for name in ("mt-qw-full", "cps-full"):
        best = out / name / "checkpoints" / "best.ckpt"
        logged = load_checkpoint(best)["best_metric"]
        assert abs(_dice_on_val(tiny, best) - logged) < 1e-5, name

    # kill + resume under DDP gives the uninterrupted run's weights, second network and teacher
    assert "resumed from" in proc.stdout and "at iteration 2" in proc.stdout
    for name in GUIDED:
        a = load_checkpoint(out / f"{name}-full" / "checkpoints" / "last.ckpt")
        b = load_checkpoint(out / f"{name}-killed" / "checkpoints" / "last.ckpt")
        assert a["iteration"] == b["iteration"] == 4
        for part in ("model", *[f"extra_networks.{k}" for k in a["extra_networks"]], "extra.method"):
            sa, sb = _part(a, part), _part(b, part)
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), (name, part)

    # rank 0 writes everything, the other rank nothing (audited), and rank 0 prints each line once
    writes = _writes_by_rank(audit)
    assert any("checkpoints/last.ckpt" in w for w in writes["rank0"]) and any("metrics.csv" in w for w in writes["rank0"])
    assert writes["rank1"] == []  # the key exists: rank 1 was audited
    assert proc.stdout.count("method: mt-qw+qar") == 1


def _part(state: dict, dotted: str) -> dict:
    for key in dotted.split("."):
        state = state.get(key, {})  # CPS has no method state (no teacher)
    return state


def _dice_on_val(tiny, ckpt: Path) -> float:
    from qgseg.evaluation.inference import Segmenter
    from qgseg.evaluation.metrics import foreground_dice

    run = prepare_run_data(_cfg(tiny["data"], ckpt.parent).data)  # the same splits as the DDP runs
    seg = Segmenter.from_checkpoint(ckpt)
    cases = [run.dataset.load(i) for i in run.val]
    assert len(cases) == 3
    return float(np.mean([foreground_dice(seg.predict(c), c.label, 2).mean() for c in cases]))


@pytest.mark.parametrize("command", ["train", "run"])
def test_guided_cli_run_under_two_process_ddp_writes_on_rank_zero_only(tiny, tmp_path, command):
    """`qgseg train` (train -> select -> evaluate) and `qgseg run` (+ QC of the test predictions) of MT-QW on
    2 processes: one copy of every line, files written by rank 0 alone, the test evaluation done once."""
    out = tmp_path / "runs"
    sets = [*_base(tiny, out), "train.iterations=2", "train.val_every=2", *GUIDED["mt-qw"]]
    cmd = [sys.executable, "-m", "qgseg.cli.main", command, "demo", "--name", "mtqw"]
    if command == "run":  # the given predictor (phase 1 skipped); the segmenter's run is a sub-folder
        sets = [s for s in sets if not s.startswith("guidance.predictor=")]
        cmd += ["--predictor", str(tiny["predictor"])]
    for s in sets:
        cmd += ["--set", s]
    env, audit = _audited_env(tmp_path, out)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, env=env, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    assert "error:" not in proc.stdout + proc.stderr  # e.g. rank 1 reading results only rank 0 has
    for line in ("splits:", "[2/2] val/dice", "method: mt-qw"):
        assert proc.stdout.count(line) == 1, line
    seg_dir = out / "mtqw" / ("segmenter" if command == "run" else "")
    assert (seg_dir / "eval" / "test_summary.json").is_file()
    if command == "run":
        assert (out / "mtqw" / "result.json").is_file() and proc.stdout.count("QC of the test predictions") == 1
    writes = _writes_by_rank(audit)
    assert any("test_summary.json" in w for w in writes["rank0"])
    assert writes["rank1"] == []


def test_compare_jobs_get_gpus_round_robin(monkeypatch):
    """`qgseg compare --jobs N`: one job per GPU, several per GPU beyond that, only the visible GPUs."""
    from qgseg.compare import _env, gpu_slots

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots(2) == ["0", "1"]  # fewer jobs than GPUs: one each
    assert gpu_slots(4) == ["0", "1", "2", "3"]
    assert gpu_slots(6) == ["0", "1", "2", "3", "0", "1"]  # more jobs: shared
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpu_slots(1) == ["3"] and gpu_slots(3) == ["3", "5", "3"]
    assert _env("5")["CUDA_VISIBLE_DEVICES"] == "5"


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_constructs_on_cpu(precision):
    """Without a GPU the mixed-precision configuration is only constructed (and bf16 trained one step,
    below); benchmarks/gpu_paths.py runs CUDA + bf16 on a GPU."""
    from qgseg.config import RuntimeConfig
    from qgseg.engine.fabric import make_fabric

    fabric = make_fabric(RuntimeConfig(accelerator="cpu", precision=precision, progress=False))
    net = torch.nn.Conv2d(1, 2, 3)
    model, _ = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))
    with fabric.autocast():
        assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 2, 6, 6)
    assert fabric.device.type == "cpu" and type(fabric._precision).__name__ in ("MixedPrecision", "HalfPrecision")


def test_one_bf16_mixed_iteration_on_cpu(tiny, tmp_path):
    from qgseg.engine.segmentation import SegmentationTrainer

    cfg = _cfg(tiny["data"], tmp_path, "runtime.precision=bf16-mixed", "train.iterations=1", "train.val_every=1",
               "ssl.method=mt", "guidance.qw=true", f"guidance.predictor={tiny['predictor']}",
               "ssl.unlabeled_batch_size=2", "train.batch_size=2")
    result = SegmentationTrainer(cfg, tmp_path / "bf16").fit()
    assert result.iterations_done == 1 and np.isfinite(result.best_metric)
