"""Supervised-only baselines (PH2, ACDC with 3 / 7 labeled patients) at a CPU-friendly size.

Every later semi-supervised method must beat these numbers under the same protocol.

    python benchmarks/supervised.py ph2   --data-root ../shared/data
    python benchmarks/supervised.py acdc3 --data-root ../shared/data
    python benchmarks/supervised.py acdc7 --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA_ROOT, write_result  # noqa: E402

from qgseg.config import load_config  # noqa: E402
from qgseg.pipeline import train_and_evaluate  # noqa: E402

# CPU protocol: images resized to 128x128, MONAI UNet (16..256, 2 residual units), batch 8,
# AdamW 3e-3 with poly decay, 800 (PH2) / 1000 (ACDC) iterations, validation every 200/250 iterations on the validation split only,
# test split scored once with the best validation checkpoint.
PROTOCOLS = {
    "ph2": ("ph2", ["data.image_size=[128,128]", "model.name=unet", "model.features=[16,32,64,128,256]",
                    "train.iterations=800", "train.batch_size=8", "train.optimizer=adamw", "train.lr=0.003",
                    "train.val_every=200"]),
    "acdc3": ("acdc", ["data.labeled=3", "data.image_size=[128,128]", "model.features=[16,32,64,128,256]",
                       "train.iterations=1000", "train.batch_size=8", "train.optimizer=adamw", "train.lr=0.003",
                       "train.val_every=250"]),
    "acdc7": ("acdc", ["data.labeled=7", "data.image_size=[128,128]", "model.features=[16,32,64,128,256]",
                       "train.iterations=1000", "train.batch_size=8", "train.optimizer=adamw", "train.lr=0.003",
                       "train.val_every=250"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(PROTOCOLS))
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--output-dir", default="runs/benchmarks")
    parser.add_argument("--iterations", type=int, help="override the protocol's iterations (smoke runs)")
    args = parser.parse_args()
    preset, overrides = PROTOCOLS[args.which]
    overrides = overrides + [f"data.root={args.data_root}", f"output_dir={args.output_dir}",
                             f"name=supervised_{args.which}", "runtime.progress=false"]
    if args.iterations:
        overrides.append(f"train.iterations={args.iterations}")
    cfg = load_config(preset, overrides)
    start = time.time()
    result = train_and_evaluate(cfg)
    wall = time.time() - start
    summary = result["test"]
    fg = summary["mean_foreground"]
    per_class = {name: {m: stats[m]["mean"] for m in ("dice", "iou", "hd95", "asd")}
                 for name, stats in summary["classes"].items()}
    out = {
        "dice": fg["dice"]["mean"], "dice_std": fg["dice"]["std"], "iou": fg["iou"]["mean"],
        "hd95": fg["hd95"]["mean"], "asd": fg["asd"]["mean"], "distance_unit": summary["unit"],
        "per_class": per_class, "n_test_cases": summary["n"], "best_val_dice": result["best_val_dice"],
        "best_iteration": result["best_iteration"], "wall_s": wall,
        "protocol": (f"supervised only, {args.which}: {cfg.model.name} features {cfg.model.features}, "
                     f"image size {cfg.data.image_size} (resized), batch {cfg.train.batch_size}, "
                     f"{cfg.train.iterations} iterations, {cfg.train.optimizer} lr {cfg.train.lr} "
                     f"{cfg.train.schedule}, labeled={cfg.data.labeled}, checkpoint selected on val split, "
                     f"test scored once; 2 CPU cores"),
    }
    rows = [("test Dice (mean fg)", f"{out['dice']:.4f} ± {out['dice_std']:.4f}"), ("test IoU", f"{out['iou']:.4f}"),
            (f"test HD95 ({summary['unit']})", f"{out['hd95']:.2f}")]
    rows += [(f"{n} Dice / HD95", f"{v['dice']:.4f} / {v['hd95']:.2f}") for n, v in per_class.items()]
    rows += [("best val Dice", f"{out['best_val_dice']:.4f} @ {out['best_iteration']}"),
             ("wall s", f"{wall:.0f}")]
    path = write_result(f"supervised_{args.which}", out, rows, f"Supervised baseline: {args.which}")
    print(result["table"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
