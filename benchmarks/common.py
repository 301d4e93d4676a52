"""Shared helpers for benchmark scripts: provenance and result files."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def git_commit() -> str:
    try:
        sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO, text=True).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "qgseg"], cwd=REPO).returncode
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Taken when the benchmark starts, so the recorded commit is the code that actually ran.
START_COMMIT = git_commit()


def validation_parser(doc: str | None, runs_arg: str, runs_help: str):
    """The command line of the scripts that score trained quality predictors on the validation split:
    a dataset tag, the runs (``runs_arg``), and :func:`add_validation_args`."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", help="dataset tag of the result name (ph2, colondb, acdc)")
    parser.add_argument(runs_arg, nargs="+", help=runs_help)
    add_validation_args(parser)
    return parser


def add_validation_args(parser) -> None:
    """The options of the scripts that score trained quality predictors on the validation split."""
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--masks-per-image", type=int, default=20)
    parser.add_argument("--seed", type=int, default=4321, help="synthetic-mask seed (not the runs' eval seed)")


def qgseg_cli(args: list[str], log: Path) -> None:
    """Run ``qgseg ARGS`` (one thread unless OMP_NUM_THREADS says otherwise), appending its output to
    ``log``; exit with one line naming the log when it fails."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "a") as fh:
        code = subprocess.run([sys.executable, "-m", "qgseg.cli.main", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env=env, check=False).returncode
    if code != 0:
        raise SystemExit(f"qgseg {' '.join(args[:2])} failed (exit {code}); see {log}")


def seed_row(per_seed: dict[str, float], wall_s: float | None = None,
             wall_per_seed: dict[str, float] | None = None) -> dict[str, Any]:
    """``{dice, dice_std (ddof 1; None for one seed), seeds, per_seed, wall_s[, wall_per_seed]}`` of one
    variant's per-seed Dice; ``wall_s`` is the mean of ``wall_per_seed`` when that is given."""
    import numpy as np

    vals = list(per_seed.values())
    row = {"dice": float(np.mean(vals)), "dice_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
           "seeds": sorted(int(k) for k in per_seed), "per_seed": dict(per_seed), "wall_s": wall_s}
    if wall_per_seed:
        row["wall_per_seed"] = {k: float(w) for k, w in sorted(wall_per_seed.items(), key=lambda kv: int(kv[0]))}
        row["wall_s"] = float(np.mean(list(row["wall_per_seed"].values())))
    return row


def mean_std_text(values: list[float], fmt: str = ".4f") -> str:
    """``"mean ± std"`` (sample std, ddof 1) of per-seed values; the mean alone for one value (one seed has
    no spread) and "n/a" for none."""
    import numpy as np

    vals = [float(v) for v in values]
    if not vals:
        return "n/a"
    return f"{np.mean(vals):{fmt}}" + (f" ± {np.std(vals, ddof=1):{fmt}}" if len(vals) > 1 else "")


def seed_walls(row: dict[str, Any] | None, replaced: dict[str, float] | None = None) -> dict[str, float]:
    """``{seed: wall s}`` of a result row. A row written before ``wall_per_seed`` existed has only the mean over
    its seeds; the seeds in ``replaced`` (the same runs found here again, their walls known) are taken out of
    that mean and the rest get what remains, so regenerating a report does not pull carried seeds' walls
    towards the runs here. (A grid tabulated before comparison.json kept `wall_per_seed` gives every seed its
    mean: the sum stays exact.)"""
    row, replaced = row or {}, replaced or {}
    if row.get("wall_per_seed"):
        return {str(k): float(w) for k, w in row["wall_per_seed"].items()}
    seeds, mean = [str(k) for k in (row.get("per_seed") or {})], row.get("wall_s")
    if mean is None or not seeds:
        return {}
    again = [k for k in seeds if k in replaced]
    rest = [k for k in seeds if k not in replaced]
    if not rest:
        return {k: replaced[k] for k in again}
    rest_mean = (float(mean) * len(seeds) - sum(replaced[k] for k in again)) / len(rest)
    return {**{k: rest_mean for k in rest}, **{k: replaced[k] for k in again}}


def grid_rows(grid: Path, variants: list[str], seeds: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{variant: seed_row}`` from a ``qgseg compare`` grid's ``comparison.json``, on ``seeds`` only
    (None: all); {} before it exists."""
    path = Path(grid) / "comparison.json"
    if not path.is_file():
        return {}
    methods = json.loads(path.read_text())["methods"]
    out = {}
    for v in variants:
        r = methods.get(v) or {}
        per_seed = {k: float(x) for k, x in r.get("per_seed", {}).items() if seeds is None or k in seeds}
        # each run's own wall (grids tabulated before comparison.json kept it give every seed the mean)
        walls = {str(k): float(w) for k, w in (r.get("wall_per_seed") or {}).items() if str(k) in per_seed}
        if per_seed:
            out[v] = seed_row(per_seed, r.get("wall_s"), walls if len(walls) == len(per_seed) else None)
    return out


def carry_committed(fresh: dict[str, dict[str, Any]], committed: dict[str, dict[str, Any]] | None,
                    seeds: list[str] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """``fresh`` rows (``{variant: seed_row}``) completed by the committed result's per-seed Dice of the seeds
    (of ``seeds``; None: all) that have no run folder here, e.g. in a fresh checkout, where the runs behind a
    committed table are gone. A seed run here wins over the committed value. Returns the rows and
    ``{variant: carried seeds}``, so the report can say which numbers it did not recompute."""
    rows, carried = dict(fresh), {}
    for v, old in (committed or {}).items():
        new = fresh.get(v) or {}
        keep = {k: float(x) for k, x in (old.get("per_seed") or {}).items()
                if k not in new.get("per_seed", {}) and (seeds is None or k in seeds)}
        if keep:
            # wall per run: per seed, the committed seeds' own walls beside the runs here
            here = seed_walls(new)
            # a seed whose Dice here equals the committed one is the same run (a regenerated report): its wall
            # is known and comes out of a legacy mean; a seed run again has an unknown earlier wall
            same = {k: w for k, w in here.items()
                    if abs(float((old.get("per_seed") or {}).get(k, float("nan"))) - new["per_seed"][k]) < 1e-9}
            old_walls = seed_walls(old, same)
            walls = {**{k: old_walls[k] for k in keep if k in old_walls}, **here}
            rows[v] = seed_row({**keep, **new.get("per_seed", {})}, None, walls)
            carried[v] = sorted(int(k) for k in keep)
    return rows, carried


def refresh_comparison(grid: Path, variants: list[str], seeds: list[int] | None = None,
                       extra: dict[str, Any] | None = None) -> list[str]:
    """Rewrite ``grid``'s ``comparison.{json,md,csv,png}`` from the finished runs (``result.json``) of
    ``variants`` x ``seeds`` (None: every seed with a run folder of these variants). A grid trained by
    several ``qgseg compare`` calls (other seeds or methods later) holds only the last call's table;
    this one counts every finished run. The old file's other keys (predictor, wall, ...) are kept,
    ``extra`` overrides them; returns the runs not finished."""
    from qgseg.compare import _read_result, aggregate, run_name, write_outputs

    grid = Path(grid)
    if seeds is None:
        split = (p.name.rsplit("_s", 1) for p in (grid / "runs").glob("*_s*"))
        seeds = sorted({int(seed) for variant, seed in split if variant in variants and seed.isdigit()})
    results, not_done = {}, []
    for v in variants:
        for s in seeds:
            r = _read_result(grid / "runs" / run_name(v, s))
            if r is not None:
                results[(v, s)] = r
            else:
                not_done.append(run_name(v, s))
    path = grid / "comparison.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    table = aggregate(results, variants, seeds)
    kept = {k: v for k, v in old.items() if k not in table}
    write_outputs(table, grid, {**kept, **(extra or {}), "not_done": not_done})
    return not_done


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def committed_result(name: str) -> dict[str, Any] | None:
    """The result file ``benchmarks/results/<name>.json`` as committed (None before the first run)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def seed_results(obj: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every per-seed result in a result file: the key path of each ``per_seed`` map plus the seed. A list's
    items are named by their ``value`` or ``name`` (e.g. an ablation's rows), else by position."""
    if isinstance(obj, list):
        items = ((x.get("value", x.get("name", i)) if isinstance(x, dict) else i, x) for i, x in enumerate(obj))
        return set().union(*(seed_results(x, (*path, str(k))) for k, x in items))
    if not isinstance(obj, dict):
        return set()
    found = set()
    for k, v in obj.items():
        if k == "per_seed" and isinstance(v, dict):
            found |= {(*path, str(seed)) for seed in v}
        else:
            found |= seed_results(v, (*path, str(k)))
    return found


def check_no_dropped_seeds(name: str, result: dict[str, Any]) -> None:
    """Refuse to write a result that lacks per-seed results of the committed file (for instance a
    ``--report-only`` in a checkout without the run folders): the loss would otherwise be silent.
    ``QGSEG_BENCH_REPLACE=1`` replaces the file anyway."""
    old = committed_result(name)
    if old is None or os.environ.get("QGSEG_BENCH_REPLACE") == "1":
        return
    dropped = sorted(seed_results(old) - seed_results(result))
    if dropped:
        shown = ", ".join("/".join(d[:-1]) + f" seed {d[-1]}" for d in dropped[:4])
        raise SystemExit(f"{RESULTS / name}.json: the new result lacks {len(dropped)} per-seed result(s) of the "
                         f"committed one ({shown}{', ...' if len(dropped) > 4 else ''}); are their run folders "
                         "missing here? Nothing written. Set QGSEG_BENCH_REPLACE=1 to replace the file anyway.")


def command_without_note(command: str, note: Any) -> str:
    """``command`` with the value of its ``--note`` (often a paragraph, shown beside it anyway) replaced by a
    pointer, so that a table prints the note once."""
    return command.replace(f"--note {shlex.quote(str(note))}", "--note '<the note>'") if note else command


def write_result(name: str, result: dict[str, Any], table_rows: list[tuple[str, str]], title: str,
                 draw: Any = None) -> Path:
    """Write ``results/<name>.json`` (with command + commit) and ``results/<name>.md``; with ``draw``
    (a function of the output path) also ``results/<name>.png``, shown in the markdown."""
    check_no_dropped_seeds(name, result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command_line(), "git_commit": START_COMMIT}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table_rows]
    note = result.get("note")
    if note and not any(k == "note" for k, _ in table_rows):
        lines += ["", f"Note: {note}"]
    lines += ["", f"Protocol: {result.get('protocol', '')}", "",
              f"Command: `{command_without_note(result['command'], note)}`", f"Commit: `{result['git_commit']}`"]
    if draw is not None:
        draw(RESULTS / f"{name}.png")
        lines += ["", f"![{name}]({name}.png)"]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    return path
