"""Start-of-run checks of a run folder: never replace a finished run by accident, never resume
with settings that differ from the checkpoint's without saying so, and clear what killed
writes left behind."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig, to_dict
from .checkpoint import remove_orphan_tmp_files

__all__ = ["SAFE_RESUME_KEYS", "config_differences", "existing_run_files", "prepare_run_dir",
           "resume_config_changes"]

#: Files whose presence means a folder holds a (possibly unfinished) run.
RUN_MARKERS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "eval/result.json", "eval/quality_eval.json",
               "result.json")
#: What a run writes into its folder, removed by ``--overwrite``. ``segmenter``/``quality`` are the two
#: runs of ``qgseg run``; ``weak`` holds phase 1's snapshots and cached predictions.
RUN_OUTPUTS = ("checkpoints", "eval", "logs", "plots", "qc", "weak", "pretrain", "segmenter", "quality",
               "train_history.json", "result.json")
#: Nested run folders of ``qgseg run`` (phase 1 and phase 2), checked like the top level.
NESTED_RUNS = ("segmenter", "quality")

#: Config keys that may change when a run is resumed (a key ending in "." covers a whole section or
#: prefix), and why they are safe: none of them changes what the weights so far were trained on or how
#: training continues from them; they set the length of the run, when it validates or saves, where
#: files are, and what happens after training.
SAFE_RESUME_KEYS: dict[str, str] = {
    "train.iterations": "the run's length (extend or shorten it; the schedule follows the new total)",
    "quality.epochs": "the predictor run's length (sets its train.iterations)",
    "train.val_every": "when validation happens, not what is trained",
    "quality.val_every_epochs": "when the predictor is validated",
    "train.checkpoint_every": "when last.ckpt is written",
    "train.early_stop_patience": "when to stop, not how to train",
    "quality.early_stop_patience": "when the predictor run stops",
    "runtime.progress": "display only",
    "guidance.probe_cases": "a logged diagnostic at validation, not used in training",
    "runtime.accelerator": "the same run on other hardware (checkpoints load on any device)",
    "eval.": "the evaluation after training",
    "quality.eval_": "the predictor's evaluation after training",
    "output_dir": "where run folders are, not what they hold",
    "name": "the run folder's name",
    "data.root": "where the data lives (e.g. another machine); data.dataset is still compared",
}
# Deliberately NOT safe: runtime.devices / num_nodes / strategy (change the effective batch and the
# per-rank random streams), runtime.precision, data.* other than root (other cases or preprocessing),
# every model / optimiser / loss / SSL / guidance setting.


def _is_safe(key: str) -> bool:
    return any(key.startswith(k) if k.endswith((".", "_")) else key == k for k in SAFE_RESUME_KEYS)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, full))
        else:
            out[full] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs, sorted by key. A key the
    old config lacks (written by an older qgseg) counts as its default value."""
    base = _flatten(to_dict(RunConfig()))
    old_flat, new_flat = {**base, **_flatten(old)}, {**base, **_flatten(new)}
    return [(k, old_flat.get(k), new_flat.get(k)) for k in sorted(set(old_flat) | set(new_flat))
            if old_flat.get(k) != new_flat.get(k)]


def resume_config_changes(old: dict[str, Any], new: dict[str, Any], checkpoint: Path,
                          ignore: tuple[str, ...] = ()) -> list[str]:
    """Compare the config of a run being resumed (``new``) with the one stored in its ``checkpoint``
    (``ignore``: keys the trainer derives from others, e.g. the predictor's iterations from its epochs).

    Returns ``"key: old -> new"`` lines for the safe differences (:data:`SAFE_RESUME_KEYS`), which
    the caller announces and applies; raises ConfigError listing every unsafe one (resuming would
    mix the checkpoint's settings with the new ones)."""
    diffs = [d for d in config_differences(old, new) if d[0] not in ignore]
    unsafe = [f"  {k}: {o!r} -> {n!r}" for k, o, n in diffs if not _is_safe(k)]
    if unsafe:
        run_dir = checkpoint.parent.parent
        raise ConfigError(
            f"cannot resume {run_dir}: the config differs from the one it was trained with "
            f"({checkpoint}) in {len(unsafe)} setting(s) that change training:\n" + "\n".join(unsafe)
            + f"\nrevert them to resume (the run's settings are in {run_dir / 'config.yaml'}), or start a "
              f"new run with --name NEW (or replace this one with --overwrite instead of --resume); "
              f"settings that may change on resume: "
            + ", ".join(k + ("*" if k.endswith((".", "_")) else "") for k in SAFE_RESUME_KEYS))
    return [f"{k}: {o!r} -> {n!r}" for k, o, n in diffs]


def existing_run_files(run_dir: str | Path) -> list[Path]:
    """The files showing that ``run_dir`` (or one of its nested runs) holds a run."""
    run_dir = Path(run_dir)
    found = [run_dir / m for m in RUN_MARKERS if (run_dir / m).is_file()]
    for sub in NESTED_RUNS:
        found += [run_dir / sub / m for m in RUN_MARKERS if (run_dir / sub / m).is_file()]
    return found


def prepare_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """The start of every run in ``run_dir`` (``train``, ``run``, ``quality train``, their use by
    ``compare`` and ``demo``), before any work:

    * removes orphan ``.ckpt.*.tmp`` files of killed checkpoint writes, with a note;
    * without ``resume``: refuses (ConfigError) a folder that already holds a run, unless
      ``overwrite``, which removes the old run's outputs (:data:`RUN_OUTPUTS`) with a printed line.

    Only the main process does this: under torchrun or SLURM every rank starts the command at
    once, and a rank > 0 would otherwise find rank 0's first files (or remove them).
    """
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in its folder and --overwrite replaces it: give only one")
    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    orphans = remove_orphan_tmp_files(run_dir)
    if orphans:
        print(f"removed {len(orphans)} unfinished checkpoint write(s) left by a killed run: "
              + ", ".join(str(p) for p in orphans))
    if resume:
        return
    found = existing_run_files(run_dir)
    if not found:
        return
    if not overwrite:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(str(p.relative_to(run_dir)) for p in found)}); "
                          f"--resume continues it, --overwrite replaces it, or choose another --name")
    removed = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    print(f"--overwrite: removing the previous run in {run_dir} ("
          + ", ".join(p.name for p in removed) + ")")
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
