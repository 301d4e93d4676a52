"""``qgseg compare``: a grid of ``qgseg run`` variants x seeds that share one quality predictor,
then one table row per variant: test Dice mean ± std over seeds and, for each guided variant, the
paired difference against its own unguided method over the seeds both have.

Layout of a grid folder ``<output_dir>/<name>/``::

    quality/                  phase 1, trained once for the whole grid (phase1.json when done)
    runs/<variant>_s<seed>/   one ordinary ``qgseg run`` folder each, with its log.txt
    comparison.{md,csv,json,png}

Every run is an ordinary ``qgseg run`` subprocess, so a grid is resumable: runs with a
``result.json`` are skipped, unfinished ones continue with ``--resume``. The aggregation
(:func:`aggregate`, :func:`format_markdown`, :func:`base_of`) is pure and needs no training.
"""
from __future__ import annotations

import csv
import json
import math
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .threads import per_job_threads

RESULT_FILE = "result.json"
LOG_FILE = "log.txt"
PHASE1_FILE = "phase1.json"
LOG_TAIL_LINES = 25


# ----------------------------------------------------------------------------- variants
def _parse(variant: str) -> tuple[str, bool, bool]:
    """``METHOD[-qw][+qar]`` or ``qar`` -> (METHOD, qw, qar), the grammar of
    :func:`qgseg.pipeline.variant_overrides`."""
    name = variant.strip().lower()
    qar = name == "qar" or name.endswith("+qar")
    base = "sup" if name == "qar" else name.removesuffix("+qar")
    qw = base.endswith("-qw")
    return base.removesuffix("-qw"), qw, qar


def is_guided(variant: str) -> bool:
    _, qw, qar = _parse(variant)
    return qw or qar


def base_of(variant: str) -> str | None:
    """The unguided method a guided variant is compared with (``mt-qw``, ``mt+qar``,
    ``mt-qw+qar`` -> ``mt``; ``qar`` -> ``sup``); None for an unguided variant."""
    base, qw, qar = _parse(variant)
    return base if (qw or qar) else None


def _canonical(method: str) -> str:
    from .pipeline import VARIANT_ALIASES

    return VARIANT_ALIASES.get(method, method)


def find_base(variant: str, variants: Iterable[str]) -> str | None:
    """The grid's variant that is ``variant``'s unguided method (``pl-qw`` pairs with ``pl`` or
    ``pl-c``), or None when the grid does not have it."""
    base = base_of(variant)
    if base is None:
        return None
    unguided = [v for v in variants if not is_guided(v)]
    for v in unguided:
        if v.strip().lower() == base:
            return v
    for v in unguided:
        if _canonical(_parse(v)[0]) == _canonical(base):
            return v
    return None


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


# ----------------------------------------------------------------------------- aggregation (pure)
def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1) of ``values``; the std is None for a single value (one seed has no
    spread to report, and 0 would read as "no variation"); (None, None) if empty."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def aggregate(results: dict[tuple[str, int], dict[str, Any] | None], variants: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Table of a grid from its runs' ``result.json`` dicts keyed by (variant, seed).

    A value of None marks a failed run; a key that is absent is a run not (yet) done. Each
    seed's value is that run's mean foreground Dice over the test cases; a variant's Dice and
    HD95 are the mean ± sample std of those values over its seeds. For each guided variant with
    its unguided method in the grid, ``guided_vs_base`` holds the paired difference (guided - base)
    over the seeds both have, its std, and the number of seeds where the guided one is higher.
    """
    variants = list(variants) if variants is not None else list(dict.fromkeys(v for v, _ in results))
    seeds = sorted(seeds) if seeds is not None else sorted({s for _, s in results})
    methods: dict[str, Any] = {}
    unit = None
    for v in variants:
        per_seed, hd95, wall, per_class = {}, [], {}, {}
        failed = [s for s in seeds if (v, s) in results and results[(v, s)] is None]
        for s in seeds:
            r = results.get((v, s))
            if r is None:
                continue
            test = r["test"]
            unit = unit or test.get("unit")
            per_seed[s] = float(test["mean_foreground"]["dice"]["mean"])
            hd95.append(test["mean_foreground"]["hd95"]["mean"])
            if r.get("wall_s") is not None:
                wall[s] = float(r["wall_s"])
            for cls, stats in test.get("classes", {}).items():
                per_class.setdefault(cls, []).append(float(stats["dice"]["mean"]))
        dice, dice_std = _mean_std(list(per_seed.values()))
        hd, hd_std = _mean_std(hd95)
        methods[v] = {"dice": dice, "dice_std": dice_std, "hd95": hd, "hd95_std": hd_std,
                      "wall_s": _mean_std(list(wall.values()))[0], "wall_per_seed": wall,
                      "seeds": sorted(per_seed), "per_seed": per_seed,
                      "per_class": {c: dict(zip(("dice", "dice_std"), _mean_std(vals)))
                                    for c, vals in per_class.items()},
                      "failed": failed, "guided": is_guided(v)}
    guided_vs_base: dict[str, Any] = {}
    for v in variants:
        base = find_base(v, variants)
        if base is None:
            continue
        mine, theirs = methods[v]["per_seed"], methods[base]["per_seed"]
        paired = sorted(set(mine) & set(theirs))
        diffs = {s: mine[s] - theirs[s] for s in paired}
        diff, diff_std = _mean_std(list(diffs.values()))
        guided_vs_base[v] = {"base": base, "diff": diff, "diff_std": diff_std,
                             "wins": sum(d > 0 for d in diffs.values()), "n": len(paired), "per_seed": diffs}
    return {"variants": variants, "seeds": list(seeds), "unit": unit, "methods": methods,
            "guided_vs_base": guided_vs_base}


def _pm(mean: float | None, std: float | None, digits: int = 3, sign: bool = False) -> str:
    if mean is None:
        return "–"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return fmt.format(mean) if std is None else f"{fmt.format(mean)} ± {std:.{digits}f}"


def _classes(table: dict[str, Any]) -> list[str]:
    """Class names, shown per class only when there are several foreground classes."""
    names: list[str] = []
    for m in table["methods"].values():
        names += [c for c in m["per_class"] if c not in names]
    return names if len(names) > 1 else []


def _seeds_cell(m: dict[str, Any], n_planned: int) -> str:
    text = f"{len(m['seeds'])}/{n_planned}"
    if m["failed"]:
        text += " (FAILED: " + ", ".join(f"s{s}" for s in m["failed"]) + ")"
    return text


def table_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the comparison table (shared by markdown and print)."""
    unit = {"pixels": "px"}.get(table.get("unit") or "", table.get("unit") or "")
    classes = _classes(table)
    header = (["variant", "test Dice", "vs unguided (paired)", "wins"] + [f"Dice {c}" for c in classes]
              + [f"HD95 ({unit})" if unit else "HD95", "wall (s/run)", "seeds"])
    rows = []
    for v in table["variants"]:
        m = table["methods"][v]
        g = table["guided_vs_base"].get(v)
        vs = f"{_pm(g['diff'], g['diff_std'], sign=True)} vs {g['base']}" if g and g["n"] else ""
        wins = f"{g['wins']}/{g['n']}" if g and g["n"] else ""
        per_class = [_pm(m["per_class"].get(c, {}).get("dice"), m["per_class"].get(c, {}).get("dice_std"))
                     for c in classes]
        wall = f"{m['wall_s']:.0f}" if m["wall_s"] is not None else "–"
        rows.append([v, _pm(m["dice"], m["dice_std"]), vs, wins, *per_class, _pm(m["hd95"], m["hd95_std"], 2),
                     wall, _seeds_cell(m, len(table["seeds"]))])
    return header, rows


def format_markdown(table: dict[str, Any]) -> str:
    """The comparison as a markdown table with a short legend."""
    header, rows = table_rows(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    seeds = ", ".join(str(s) for s in table["seeds"])
    lines += ["", (f"Test split; mean ± sample std over seeds ({seeds}) of each run's mean foreground Dice / "
                   "HD95 over the test cases. 'vs unguided': guided minus its unguided method, paired by seed "
                   "over the seeds both finished; 'wins': seeds where the guided variant is higher.")]
    failed = [f"{v} s{s}" for v in table["variants"] for s in table["methods"][v]["failed"]]
    if failed:
        lines.append(f"FAILED runs (see their log.txt): {', '.join(failed)}.")
    return "\n".join(lines) + "\n"


def write_csv(table: dict[str, Any], path: Path) -> Path:
    classes = _classes(table)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "dice_mean", "dice_std", *[f"dice_{c}_{s}" for c in classes for s in ("mean", "std")],
                    "hd95_mean", "hd95_std", "unit", "wall_s", "seeds_done", "seeds_planned", "failed_seeds",
                    "base", "diff_mean", "diff_std", "wins", "n_paired"])
        for v in table["variants"]:
            m, g = table["methods"][v], table["guided_vs_base"].get(v, {})
            pc = [m["per_class"].get(c, {}).get(k) for c in classes for k in ("dice", "dice_std")]
            w.writerow([v, m["dice"], m["dice_std"], *pc, m["hd95"], m["hd95_std"], table.get("unit"), m["wall_s"],
                        len(m["seeds"]), len(table["seeds"]), " ".join(str(s) for s in m["failed"]),
                        g.get("base"), g.get("diff"), g.get("diff_std"), g.get("wins"), g.get("n")])
    return path


def plot_comparison(table: dict[str, Any], path: Path, title: str = "comparison") -> Path:
    """Test Dice per variant: each seed's value as a dot, the mean as a wide tick with ± std error
    bars; guided variants in a second colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    variants = table["variants"]
    fig = Figure(figsize=(max(5.0, 1.1 * len(variants) + 1.5), 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, v in enumerate(variants):
        m = table["methods"][v]
        colour = "tab:orange" if m["guided"] else "tab:blue"
        if m["dice"] is not None:
            ax.errorbar(i, m["dice"], yerr=m["dice_std"] or 0, fmt="_", color=colour, markersize=28, capsize=8,
                        elinewidth=2, markeredgewidth=2.5, zorder=2)
        vals = [m["per_seed"][s] for s in m["seeds"]]
        offsets = [0.0] if len(vals) == 1 else [-0.15 + 0.3 * k / (len(vals) - 1) for k in range(len(vals))]
        ax.scatter([i + o for o in offsets], vals, color=colour, edgecolor="black", s=22, zorder=3)
    ax.set_xticks(range(len(variants)), variants, rotation=30 if len(variants) > 5 else 0)
    ax.set_ylabel("test Dice (mean foreground)")
    ax.set_title(f"{title}\ntest Dice: dots = seeds, tick and bars = mean ± std", fontsize=10)
    ax.set_xlim(-0.6, len(variants) - 0.4)
    done = [v for m in table["methods"].values() for v in m["per_seed"].values()]
    if done:
        lo = min(done)
        ax.set_ylim(max(0.0, lo - 0.1), min(1.0, max(done) + 0.05) + 0.01)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_outputs(table: dict[str, Any], grid: Path, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """comparison.{md,csv,json,png} in ``grid``."""
    grid.mkdir(parents=True, exist_ok=True)
    paths = {"md": grid / "comparison.md", "csv": grid / "comparison.csv", "json": grid / "comparison.json",
             "png": grid / "comparison.png"}
    paths["md"].write_text(f"# {grid.name}\n\n" + format_markdown(table))
    write_csv(table, paths["csv"])
    with open(paths["json"], "w") as fh:
        json.dump(_json_safe({**table, **(extra or {})}), fh, indent=2)
    plot_comparison(table, paths["png"], grid.name)
    return paths


# ----------------------------------------------------------------------------- running the grid
@dataclass
class RunSpec:
    variant: str
    seed: int
    run_dir: Path
    command: list[str]
    resume: bool = False
    threads: int = 1  # CPU threads of the child process (OMP_NUM_THREADS)


@dataclass
class Outcome:
    spec: RunSpec
    status: str  # done | skipped | failed
    wall_s: float = 0.0
    result: dict[str, Any] | None = None
    log_tail: str = ""
    returncode: int | None = None


@dataclass
class GridRun:
    """What :func:`run_compare` returns."""

    grid: Path
    table: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    predictor: str | None = None
    phase1: dict[str, Any] | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        with open(run_dir / RESULT_FILE) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def run_command(config: str, variant: str, seed: int, runs_dir: Path, predictor: str | None,
                overrides: Sequence[str] = (), data_root: str | None = None, resume: bool = False,
                overwrite: bool = False) -> list[str]:
    """The ``qgseg run`` command line of one grid cell (``overwrite``: replace a previous run there)."""
    cmd = [sys.executable, "-m", "qgseg.cli.main", "run", str(config), "--variant", variant]
    for o in overrides:
        cmd += ["--set", o]
    cmd += ["--set", f"train.seed={seed}", "--set", "runtime.progress=false",
            "--output-dir", str(runs_dir), "--name", run_name(variant, seed)]
    if predictor:
        cmd += ["--predictor", str(predictor)]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    if resume:
        cmd.append("--resume")
    elif overwrite:
        cmd.append("--overwrite")
    return cmd


def gpu_slots(jobs: int) -> list[str | None]:
    """One entry per concurrent job: the CUDA device it runs on (round-robin over the visible
    GPUs, several jobs per GPU when jobs > GPUs), or None everywhere on a CPU-only machine."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA runtime means CPU
        n = 0
    if n == 0:
        return [None] * jobs
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()][:n] if visible else [str(i) for i in range(n)]
    return [ids[k % len(ids)] for k in range(jobs)]


def _env(gpu: str | None, threads: int = 1) -> dict[str, str]:
    """Environment of one run: ``threads`` CPU threads (the CPUs // N share of N parallel jobs:
    more would make the runs' OpenMP threads wait on each other), its GPU when there is one."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _execute(spec: RunSpec, slots: queue.Queue, stop: threading.Event, fresh_log: bool) -> Outcome:
    gpu = slots.get()
    try:
        if stop.is_set():
            return Outcome(spec, "failed", log_tail="not started: the grid was interrupted")
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = spec.run_dir / LOG_FILE
        start = time.time()
        with open(log_path, "w" if fresh_log else "a") as log:
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      f"{' on GPU ' + gpu if gpu is not None else ''}\n$ {shlex.join(spec.command)}\n")
            log.flush()
            proc = subprocess.run(spec.command, stdout=log, stderr=subprocess.STDOUT, env=_env(gpu, spec.threads), check=False)
        wall = time.time() - start
        result = _read_result(spec.run_dir) if proc.returncode == 0 else None
        if result is None:
            return Outcome(spec, "failed", wall, log_tail=_tail(log_path), returncode=proc.returncode)
        return Outcome(spec, "done", wall, result=result, returncode=0)
    finally:
        slots.put(gpu)


def _run_phase1(cfg, grid: Path, fresh: bool) -> dict[str, Any]:
    """Train the grid's quality predictor once in ``<grid>/quality`` (or reuse a finished one)."""
    from .data.run_data import prepare_run_data
    from .quality.training import train_quality_predictor

    qdir = grid / "quality"
    marker = qdir / PHASE1_FILE
    if marker.is_file() and not fresh:
        info = json.loads(marker.read_text())
        if Path(info["checkpoint"]).is_file():
            print(f"phase 1: reusing the grid's quality predictor {info['checkpoint']}")
            return info
    marker.unlink(missing_ok=True)
    data = prepare_run_data(cfg.data, cfg.output_dir)
    print(f"phase 1: training the grid's quality predictor on the {len(data.labeled)} labeled cases "
          f"(shared by every run) in {qdir}")
    resume = not fresh and (qdir / "checkpoints" / "last.ckpt").is_file()
    qres = train_quality_predictor(cfg, qdir, resume=resume, data=data, overwrite=fresh)
    ev = qres.get("eval", {})
    info = {"checkpoint": str(Path(qres["checkpoint"]).resolve()), "wall_s": qres.get("wall_s"),
            "best_val_mae": qres.get("best_val_mae"),
            "synthetic": ev.get("synthetic", {}).get("all"), "real": ev.get("real", {}).get("all")}
    qdir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(_json_safe(info), indent=2, default=float))
    return info


def run_compare(config: str, methods: Sequence[str], seeds: Sequence[int], jobs: int = 1,
                output_dir: str | None = None, name: str | None = None, overrides: Sequence[str] = (),
                data_root: str | None = None, predictor: str | None = None, fresh: bool = False,
                show: bool = True) -> GridRun:
    """Run the (variant, seed) grid of ``config`` and write the comparison; see the module doc.

    ``fresh`` reruns every run and phase 1 from scratch instead of skipping finished ones and
    resuming unfinished ones (what ``qgseg demo`` without ``--resume`` does); ``show=False`` leaves the
    final table to the caller."""
    from .config import ConfigError, load_config
    from .pipeline import variant_overrides

    methods = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not methods or not seeds:
        raise ConfigError("compare needs at least one method (--methods) and one seed (--seeds)")
    for m in methods:
        variant_overrides(m)  # unknown methods fail here, before any training
    overrides = list(overrides)
    extra = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    cfg = load_config(config, extra + ([f"output_dir={output_dir}"] if output_dir else []))
    grid = (Path(cfg.output_dir) / (name or f"{cfg.name}_compare")).resolve()
    runs_dir = grid / "runs"
    start = time.time()
    if fresh:
        from .engine.run_dir import existing_run_files

        previous = [d for d in [grid / "quality", *sorted(runs_dir.glob("*"))] if existing_run_files(d)]
        if previous:
            print(f"replacing the previous results in {grid} ({len(previous)} run folder(s)): every run is "
                  f"trained afresh (--resume keeps finished runs and continues the others)")

    if cfg.data.dataset == "demo":
        # why: generate the demo data once, where `qgseg run` would (<output_dir>/_demo_data), and
        # give every run the same folder, so runs never race to write it and the predictor's
        # recorded dataset is the runs' dataset (leak check)
        from .data.run_data import resolve_dataset_path

        path = Path(resolve_dataset_path(cfg.data, cfg.output_dir)).resolve()
        overrides.append(f"data.dataset={path}")
        cfg.data.dataset = str(path)

    predictor = predictor or cfg.guidance.predictor
    phase1 = None
    if predictor:
        p = Path(predictor)
        predictor = str(p.resolve()) if p.exists() else str(predictor)
        print(f"quality predictor given: {predictor} (each run checks it for leaks)")
    else:
        # every `qgseg run` needs a predictor (guidance, and QC of its test predictions): one for all
        cfg.name = f"{grid.name}_quality"
        phase1 = _run_phase1(cfg, grid, fresh)
        predictor = phase1["checkpoint"]

    specs, outcomes = [], []
    for seed in seeds:
        for v in methods:
            run_dir = runs_dir / run_name(v, seed)
            if (run_dir / RESULT_FILE).is_file() and not fresh:
                result = _read_result(run_dir)
                if result is not None:
                    print(f"{run_name(v, seed)}: skipped, already done ({run_dir / RESULT_FILE})")
                    outcomes.append(Outcome(RunSpec(v, seed, run_dir, []), "skipped", result=result))
                    continue
            if fresh:
                (run_dir / RESULT_FILE).unlink(missing_ok=True)
            resume = run_dir.is_dir() and not fresh
            specs.append(RunSpec(v, seed, run_dir, run_command(config, v, seed, runs_dir, predictor, overrides,
                                                               data_root, resume, overwrite=fresh), resume))

    slots: queue.Queue = queue.Queue()
    gpus = gpu_slots(max(1, jobs))
    for g in gpus:
        slots.put(g)
    threads = per_job_threads(max(1, jobs))
    for spec in specs:
        spec.threads = threads
    where = (f"on GPU(s) {', '.join(sorted(set(gpus)))}" if gpus[0] is not None else "on the CPU")
    where += f", {threads} CPU thread(s) each"
    if specs:
        print(f"running {len(specs)} run(s), {max(1, jobs)} at a time {where}; logs in {runs_dir}/*/{LOG_FILE}")
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = {}
        for spec in specs:
            print(f"{run_name(spec.variant, spec.seed)}: {'resuming' if spec.resume else 'queued'}")
            futures[pool.submit(_execute, spec, slots, stop, fresh or not spec.resume)] = spec
        for fut in as_completed(futures):
            o = fut.result()
            outcomes.append(o)
            label = run_name(o.spec.variant, o.spec.seed)
            if o.status == "done":
                print(f"{label}: done in {o.wall_s:.0f} s, best val Dice {o.result['best_val_dice']:.4f} "
                      f"@ {o.result['best_iteration']}")
            else:
                print(f"{label}: FAILED (exit {o.returncode}) after {o.wall_s:.0f} s; last lines of "
                      f"{o.spec.run_dir / LOG_FILE}:\n" + "\n".join("    " + ln for ln in o.log_tail.splitlines()),
                      flush=True)
    except KeyboardInterrupt:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

    results = {(o.spec.variant, o.spec.seed): (o.result if o.status != "failed" else None) for o in outcomes}
    table = aggregate(results, methods, seeds)
    info = {"grid": str(grid), "config": str(config), "overrides": overrides, "predictor": predictor,
            "phase1": phase1, "runs": {run_name(o.spec.variant, o.spec.seed): o.status for o in outcomes},
            "wall_s": time.time() - start}
    paths = write_outputs(table, grid, info)
    out = GridRun(grid, table, outcomes, predictor, phase1, paths)
    if show:
        print()
        print(format_markdown(table))
    print(f"grid folder: {grid} (comparison.md/.csv/.json/.png, runs/, quality/); "
          f"quality predictor: {predictor}; wall {time.time() - start:.0f} s")
    if out.failed:
        print(f"{len(out.failed)} run(s) failed: "
              + ", ".join(f"{run_name(o.spec.variant, o.spec.seed)} ({o.spec.run_dir / LOG_FILE})" for o in out.failed),
              file=sys.stderr)
    return out
