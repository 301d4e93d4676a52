"""The demo problem is not solvable by a threshold, but a small trained network solves it."""
import numpy as np
from PIL import Image

from qgseg.config import load_config
from qgseg.data.demo import make_demo_dataset
from qgseg.pipeline import train_and_evaluate

from test_demo_data import _oracle_threshold_dice


def test_trained_network_clearly_beats_best_global_threshold(tmp_path):
    data = make_demo_dataset(tmp_path / "demo", seed=0)
    cfg = load_config("demo", [f"data.dataset={data}", f"output_dir={tmp_path}", "train.iterations=150",
                               "train.val_every=50", "runtime.progress=false", "eval.overlays=0"])
    net_dice = train_and_evaluate(cfg)["test"]["mean_foreground"]["dice"]["mean"]
    ids = (data / "splits" / "test.txt").read_text().split()
    thr = np.mean([_oracle_threshold_dice(np.asarray(Image.open(data / "images" / f"{i}.png")),
                                          np.asarray(Image.open(data / "masks" / f"{i}.png")) > 0) for i in ids])
    # The oracle picks the best threshold and polarity per test image with hindsight.
    assert thr < 0.6
    assert net_dice > thr + 0.2, (net_dice, thr)
