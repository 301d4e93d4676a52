"""data.unlabeled_limit: a fixed, nested random subset of the unlabeled pool (pool-size studies)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qgseg.config import ConfigError, load_config
from qgseg.data.run_data import limit_unlabeled, prepare_run_data, splits_record

from helpers import tiny_dataset


def test_subsets_are_seeded_nested_and_keep_the_pool_order():
    own, extra = [f"u{i}" for i in range(4)], [f"x{i}" for i in range(8)]
    small, small_extra = limit_unlabeled(own, extra, 5, seed=0)
    big, big_extra = limit_unlabeled(own, extra, 9, seed=0)
    assert len(small) + len(small_extra) == 5 and len(big) + len(big_extra) == 9
    assert set(small) <= set(big) and set(small_extra) <= set(big_extra)  # nested
    assert small == [i for i in own if i in small] and small_extra == [i for i in extra if i in small_extra]
    assert limit_unlabeled(own, extra, 5, seed=0) == (small, small_extra)  # the same subset every time
    assert limit_unlabeled(own, extra, 5, seed=1) != (small, small_extra)
    assert limit_unlabeled(own, extra, 12, seed=0) == (own, None)  # the whole pool: nothing dropped


def test_a_run_uses_the_limited_pool_and_records_it(tmp_path):
    data = tiny_dataset(tmp_path / "d", n_labeled=6, n_unlabeled=6)
    extra = tmp_path / "extra"
    extra.mkdir()
    for k in range(5):  # a folder of unlabeled images whose names differ from the dataset's ids
        Image.fromarray(np.full((32, 32, 3), 20 * k, np.uint8)).save(extra / f"pool_{k}.png")
    base = [f"data.dataset={data}", f"data.unlabeled={extra}", "data.labeled=0.5"]
    full = prepare_run_data(load_config(None, base).data)
    n_pool = len(full.unlabeled) + len(full.extra_unlabeled_ids)
    run = prepare_run_data(load_config(None, [*base, "data.unlabeled_limit=4"]).data)
    assert len(run.unlabeled) + len(run.extra_unlabeled_ids) == 4 < n_pool
    assert len(full.extra_unlabeled_ids) == 5 and full.extra_ids is None
    if run.extra_ids:  # the printed description says how many of the extra pool are used
        assert f"+ {len(run.extra_ids)} of 5 in" in run.describe()
    record = splits_record(run)
    assert record["unlabeled"] == run.unlabeled and record["unlabeled_dataset_ids"] == run.extra_ids
    with pytest.raises(ConfigError, match="unlabeled_limit"):
        load_config(None, [*base, "data.unlabeled_limit=0"])
