"""Quality predictor benchmarks (phase 1) on PH2, CVC-ColonDB and ACDC at a CPU-friendly size.

    python benchmarks/quality.py ph2      --data-root ../shared/data
    python benchmarks/quality.py colondb  --data-root ../shared/data
    python benchmarks/quality.py acdc     --data-root ../shared/data

Writes benchmarks/results/quality_<name>.json (+ .md): synthetic_mae / synthetic_spearman on
fixed-seed corrupted test masks, real_mae / real_spearman / real_auroc_0.7 on hard predictions
of segmentation snapshots the predictor never saw (another training seed), blackout_change and
shuffle_change (shortcut tests), the mask-only baseline and, for PH2, the published fixed set.
The protocol (sizes, epochs, widths) is the committed config configs/quality_<name>.yaml.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA_ROOT, write_result  # noqa: E402

from qgseg.config import load_config, to_dict  # noqa: E402
from qgseg.quality.predictor import backbone_label  # noqa: E402
from qgseg.quality.training import train_quality_predictor  # noqa: E402

PRESETS = {"ph2": "quality_ph2", "colondb": "quality_colondb", "acdc": "quality_acdc"}


def _decoder(cfg) -> str:
    q = cfg.quality
    return (f" + truth-map decoder (weight {q.truth_map_weight}, readout {q.readout})" if q.truth_map_weight > 0
            else " (plain regression)")


def _get(section: dict, key: str) -> float | None:
    return None if section is None else section.get(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(PRESETS))
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--output-dir", default="runs/benchmarks")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    parser.add_argument("--variant", help="suffix of the result name for a non-default protocol (with --set)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run folder's training (after a kill); a finished run is only re-evaluated")
    args = parser.parse_args()
    name = f"quality_{args.which}" + (f"_{args.variant}" if args.variant else "")
    cfg = load_config(PRESETS[args.which], [f"data.root={args.data_root}", f"output_dir={args.output_dir}",
                                            "runtime.progress=false", f"name={name}", *args.overrides])
    start = time.time()
    res = train_quality_predictor(cfg, resume=args.resume)
    wall = time.time() - start
    ev = res["eval"]
    syn, real = ev["synthetic"]["all"], ev.get("real", {}).get("all")
    out = {
        "synthetic_mae": syn["mae"], "synthetic_spearman": syn["spearman"], "synthetic_pearson": syn["pearson"],
        "synthetic_auroc_0.7": syn.get("auroc_0.7"), "synthetic_n": syn["n"],
        "real_mae": _get(real, "mae"), "real_spearman": _get(real, "spearman"), "real_pearson": _get(real, "pearson"),
        "real_auroc_0.7": _get(real, "auroc_0.7"), "real_auprc_0.7": _get(real, "auprc_0.7"),
        "real_n": _get(real, "n"), "real_positives_0.7": _get(real, "positives_0.7"),
        "blackout_change": ev["shortcuts"]["black_image"]["mean_abs_change"],
        "shuffle_change": ev["shortcuts"]["shuffled_images"]["mean_abs_change"],
        "mask_only_mae": ev.get("mask_only", {}).get("mae"), "mask_only_spearman": ev.get("mask_only", {}).get("spearman"),
        "synthetic_per_class": ev["synthetic"].get("per_class"),
        # where the error is: per sampler category, per sequence/patient, per true structure size
        **{f"synthetic_{k}": {g: {m: v[m] for m in ("n", "mae", "spearman")} for g, v in ev["synthetic"][k].items()}
           for k in ("by_category", "by_group", "by_structure_size") if k in ev["synthetic"]},
        "real_per_class": ev.get("real", {}).get("per_class"),
        # the predictor's own estimate of the truth, given the true mask: does it recognise the structure?
        "truth_map_dice": ev.get("truth_map", {}).get("dice"),
        "truth_map_by_group": ev.get("truth_map", {}).get("by_group"),
        # the score's own uncertainty: selective prediction (MAE of the most certain scores) and error detection
        "synthetic_uncertainty": ev["synthetic"].get("uncertainty"),
        "real_uncertainty": ev.get("real", {}).get("uncertainty"),
        "best_val_mae": res["best_val_mae"], "iterations": res["iterations"], "wall_s": wall,
        # self-supervised encoder pretraining (quality.pretrain) or external weights (quality.pretrained)
        "pretraining": res.get("pretraining") or ({"weights": cfg.quality.pretrained, "method": "external file"}
                                                  if cfg.quality.pretrained else None),
        "protocol": (f"configs/{PRESETS[args.which]}.yaml{' with ' + ', '.join(args.overrides) if args.overrides else ''}: predictor {backbone_label(cfg.quality.backbone, cfg.quality.depth)} width "
                     f"{cfg.quality.width}{_decoder(cfg)}, input {cfg.quality.image_size}, {cfg.quality.epochs} epochs x "
                     f"{cfg.quality.masks_per_image} masks/image, weak {cfg.model.name} snapshots at epochs "
                     f"{cfg.quality.weak_epochs}; test split only for metrics; unseen real networks = "
                     f"snapshots trained with another seed; CPU"),
        "config": to_dict(cfg),
    }
    if "ph2_fixed" in ev:
        p = ev["ph2_fixed"]["all"]
        out["ph2_fixed"] = {"mae": p["mae"], "pearson": p["pearson"], "spearman": p["spearman"],
                            "auroc_0.7": p.get("auroc_0.7"),
                            "published_reference": {"mae": 0.074, "pearson": 0.927, "spearman": 0.703,
                                                    "auroc_0.7": 0.986}}

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"

    rows = [("synthetic MAE / Spearman", f"{f(out['synthetic_mae'])} / {f(out['synthetic_spearman'])}"),
            ("real MAE / Spearman / AUROC(<0.7)",
             f"{f(out['real_mae'])} / {f(out['real_spearman'])} / {f(out['real_auroc_0.7'])}"),
            ("mask-only baseline MAE / Spearman", f"{f(out['mask_only_mae'])} / {f(out['mask_only_spearman'])}"),
            ("blackout change / shuffle change", f"{f(out['blackout_change'])} / {f(out['shuffle_change'])}"),
            ("estimated-truth Dice (true mask given)", f(out["truth_map_dice"]))]
    for part in ("synthetic", "real"):
        u = out[f"{part}_uncertainty"]
        if u:
            rows.append((f"{part}: MAE of the 50% / 80% most certain scores; AUROC(abs error > 0.1)",
                         f"{f(u['mae_at_coverage']['0.5'])} / {f(u['mae_at_coverage']['0.8'])}; "
                         f"{f(u['auroc_error'])}"))
    if "ph2_fixed" in out:
        p = out["ph2_fixed"]
        rows.append(("PH2 fixed set MAE / Pearson / Spearman / AUROC",
                     f"{f(p['mae'])} / {f(p['pearson'])} / {f(p['spearman'])} / {f(p['auroc_0.7'])} "
                     f"(published 0.074 / 0.927 / 0.703 / 0.986)"))
    rows.append(("wall s", f"{wall:.0f}"))
    path = write_result(name, out, rows, f"Quality predictor: {name}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
