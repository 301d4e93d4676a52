"""Atomic checkpoint files, loaded with ``weights_only=True``."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to a temporary file in the same folder, then rename it over ``path``.

    ``os.replace`` is atomic on one file system, so a kill mid-write leaves the previous
    checkpoint intact instead of a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # why a Python file: then a full disk is OSError(ENOSPC), not torch's "unexpected pos" RuntimeError
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None:  # write errors carry no file name: name the checkpoint being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


#: ``.<name>.<mkstemp's 8 random characters>.tmp``: what :func:`save_checkpoint` writes before the rename.
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_orphan_tmp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files of :func:`save_checkpoint` that a killed write left under ``folder``
    (recursively); returns them. Only call this when no run writes into ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    orphans = sorted(p for p in folder.rglob(".*.tmp") if p.is_file() and _TMP_NAME.match(p.name))
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


#: What each kind of checkpoint is and where it comes from, for "wrong kind" messages.
CHECKPOINT_KINDS = {
    "segmentation": ("a segmentation checkpoint", ("runs/<name>/checkpoints/best.ckpt of 'qgseg train', or "
                                                   "runs/<name>/segmenter/checkpoints/best.ckpt of 'qgseg run'")),
    "quality": ("a quality-predictor checkpoint", ("runs/<name>/checkpoints/best.ckpt of 'qgseg quality train' "
                                                   "(or that run folder), or runs/<name>/quality of 'qgseg run'")),
}


def checkpoint_kind(state: dict[str, Any]) -> str | None:
    """``"segmentation"``, ``"quality"`` or ``None`` from a loaded checkpoint's ``meta``."""
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict):
        return None
    if meta.get("task") == "quality" or "predictor" in meta:
        return "quality"
    if meta.get("task") == "segmentation" or "spec" in meta:
        return "segmentation"
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expect: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain Python values only).

    Raises :class:`~qgseg.data.io.DataError` naming ``path`` when the file is corrupt, truncated
    or holds pickled objects (never run), or, with ``expect`` (a :data:`CHECKPOINT_KINDS` key),
    when it is another kind of checkpoint.
    """
    from ..data.io import DataError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except Exception:  # noqa: BLE001 - corrupt / truncated / not a torch file / pickled code
        # why `from None`: torch's message advises retrying with weights_only=False, i.e. running the
        # file's code; a qgseg checkpoint never needs that, so that advice must never be shown.
        raise DataError("not a readable qgseg checkpoint (corrupt, truncated, or contains non-tensor objects; "
                        "nothing in it was executed)", path) from None
    if not isinstance(state, dict):
        raise DataError(f"not a qgseg checkpoint (holds a {type(state).__name__}, not a mapping)", path)
    if expect is not None:
        kind = checkpoint_kind(state)
        if kind != expect:
            what = CHECKPOINT_KINDS[kind][0] if kind else "a checkpoint of unknown kind (no task recorded)"
            want, where = CHECKPOINT_KINDS[expect]
            raise DataError(f"this is {what}; {want} is expected here ({where})", path)
        if not isinstance(state.get("model"), dict):
            raise DataError("not a qgseg checkpoint (no model weights recorded)", path)
    return state
