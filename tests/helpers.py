"""Small builders shared by tests: a tiny demo dataset and a fast config."""
from __future__ import annotations

from pathlib import Path

from qgseg.config import RunConfig, load_config
from qgseg.data.demo import make_demo_dataset


def tiny_dataset(root: Path, **kwargs) -> Path:
    params = dict(seed=0, n_labeled=8, n_unlabeled=4, n_val=2, n_test=3, size=(32, 32))
    params.update(kwargs)
    return make_demo_dataset(root, **params)


def tiny_config(data_dir: Path, out_dir: Path, **overrides) -> RunConfig:
    base = [f"data.dataset={data_dir}", f"output_dir={out_dir}", "data.image_size=[32,32]",
            "model.features=[8,16,32]", "train.batch_size=4", "train.iterations=8", "train.val_every=4",
            "runtime.progress=false", "runtime.accelerator=cpu", "eval.overlays=1"]
    base += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return load_config(None, base)
