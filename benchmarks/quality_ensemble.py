"""Do flip test-time augmentation or an ensemble of seeds make the quality predictor more accurate?

    python benchmarks/quality_ensemble.py colondb runs/benchmarks/quality_colondb_e10_nopretrain \\
        runs/benchmarks/quality_colondb_e10_nopretrain_s1 runs/benchmarks/quality_colondb_e10_nopretrain_s2

Scores the VALIDATION split only (test data is never read): ``--masks-per-image`` fixed-seed
synthetic masks per image (a seed the runs never used) are judged by each run's best checkpoint
without and with flip TTA (:class:`~qgseg.quality.scoring.QualityScorer` ``tta=True``), and by the
mean score of the first 2, 3, ... runs (an ensemble of seeds). All runs must share the
preprocessing (same config apart from the seed). Writes
``benchmarks/results/quality_<which>_ensemble.{json,md}``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import validation_parser, write_result

from qgseg.config import load_config
from qgseg.data.run_data import prepare_run_data
from qgseg.quality.evaluation import _eval_sampler, _tensors
from qgseg.quality.scoring import load_quality_predictor


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {"mae": float(np.abs(pred - true).mean()), "spearman": float(spearmanr(pred, true)[0])}


def main() -> None:
    args = validation_parser(__doc__, "runs", "run folders of one recipe, one per seed").parse_args()
    start = time.time()
    runs = [Path(r) for r in args.runs]
    cfg = load_config(runs[0] / "config.yaml", [f"data.root={args.data_root}", "runtime.progress=false"])
    data = prepare_run_data(cfg.data, cfg.output_dir)
    cases = [data.dataset.load(i) for i in data.val]
    single: dict[str, dict] = {}
    plain_preds = []
    true = None
    for run in runs:
        scorer = load_quality_predictor(run / "checkpoints" / "best.ckpt", "cpu")
        images, truth, _ = _tensors(scorer, cases)
        fixed = _eval_sampler(scorer).fixed_masks(truth, args.seed, args.masks_per_image)
        t = fixed.dice.cpu().numpy().ravel()
        if true is not None and not np.allclose(t, true):
            raise SystemExit(f"{run}: its validation masks differ from the first run's (another preprocessing?)")
        true = t
        single[run.name] = {}
        for tta in (False, True):
            scorer.tta = tta
            pred = scorer.predict(images[fixed.index], fixed.masks).numpy().ravel()
            single[run.name]["tta" if tta else "plain"] = _metrics(pred, true)
            if not tta:
                plain_preds.append(pred)
        print(run.name, single[run.name], flush=True)
    ensembles = {f"mean of the first {n} runs": _metrics(np.mean(plain_preds[:n], 0), true)
                 for n in range(2, len(plain_preds) + 1)}
    plain = np.array([v["plain"]["mae"] for v in single.values()])
    tta = np.array([v["tta"]["mae"] for v in single.values()])
    out = {"single": single, "ensembles": ensembles, "val_mae_plain_mean": float(plain.mean()),
           "val_mae_tta_mean": float(tta.mean()), "runs": [str(r) for r in runs], "n_masks": int(true.size),
           "wall_s": time.time() - start,
           "protocol": (f"validation split only; best checkpoint of each run; {args.masks_per_image} fixed-seed "
                        f"synthetic masks per image (seed {args.seed}); TTA = mean over identity and flips; "
                        f"ensemble = mean score of the runs (seeds); CPU")}
    rows = [(f"{name}: MAE / Spearman (no TTA; flip TTA)",
             f"{v['plain']['mae']:.4f} / {v['plain']['spearman']:.3f}; {v['tta']['mae']:.4f} / {v['tta']['spearman']:.3f}")
            for name, v in single.items()]
    rows.append(("mean over runs: MAE no TTA / TTA", f"{plain.mean():.4f} / {tta.mean():.4f}"))
    rows += [(name, f"{v['mae']:.4f} / {v['spearman']:.3f}") for name, v in ensembles.items()]
    rows.append(("wall s", f"{out['wall_s']:.0f}"))
    path = write_result(f"quality_{args.which}_ensemble", out, rows,
                        f"Quality predictor: flip TTA and seed ensembles on validation ({args.which})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
