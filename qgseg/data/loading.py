"""Reading many cases into memory with visible progress."""
from __future__ import annotations

from collections.abc import Iterable

from .case import Case
from .datasets import SegDataset


def load_cases(ds: SegDataset, ids: Iterable[str], desc: str, progress: bool = True) -> list[Case]:
    """``[ds.load(i) for i in ids]`` with a progress bar: reading hundreds of images takes seconds to
    minutes, and a silent start looks like a hang. ``progress=False`` (``runtime.progress``) hides it."""
    from tqdm.auto import tqdm

    ids = list(ids)
    bar = tqdm(ids, desc=desc, unit="case", dynamic_ncols=True, leave=False, disable=not progress or not ids)
    return [ds.load(i) for i in bar]
