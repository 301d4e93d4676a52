"""``qgseg quality ...`` subcommands (quality predictor: train, eval, score)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUALITY_COMMANDS = {
    "train": "train weak snapshots and the quality predictor from a YAML config",
    "eval": "evaluate a quality predictor on held-out cases (synthetic and real network masks)",
    "score": "score any model's masks without ground truth; flag the ones to review",
    "pretrain": "self-supervised pretraining of the predictor's encoder on the run's own training images "
                "(restoration); writes a local weight file for quality.pretrained",
}


#: How ``quality score`` treats bad files (its --help).
SCORE_RULE = (". Every good (image, mask) pair is scored even when others are bad: a file that cannot be "
              "read, a mask whose size is not its image's, an image without a mask (or a mask without an "
              "image, or several masks for one image) is listed at the end with its reason and in "
              "<output stem>_failures.csv, and the exit code is 1. With --skip-bad, unpaired and ambiguous "
              "files are listed as skipped and do not change the exit code; unreadable files still do.")


def add_quality_parser(sub: argparse._SubParsersAction) -> None:
    from .main import OVERWRITE_HELP, _config_args, add_skip_bad, add_split_args

    p = sub.add_parser("quality", help="quality predictor: train, eval, score",
                       description="Quality predictor g(image, mask) -> predicted Dice.")
    qsub = p.add_subparsers(dest="quality_command", metavar="SUBCOMMAND")

    c = qsub.add_parser("train", help=QUALITY_COMMANDS["train"], description=QUALITY_COMMANDS["train"])
    c.add_argument("config", help="YAML config file or preset name (quality_demo, quality_ph2, ...)")
    c.add_argument("--resume", action="store_true", help="continue from <run>/checkpoints/last.ckpt")
    c.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    c.add_argument("--no-eval", action="store_true", help="skip the final test-split evaluation")
    _config_args(c)

    c = qsub.add_parser("pretrain", help=QUALITY_COMMANDS["pretrain"], description=QUALITY_COMMANDS["pretrain"])
    c.add_argument("config", help="the quality config the weights are for (same data, depth, width, sizes)")
    c.add_argument("--steps", type=int, help="training steps (default: quality.pretrain.steps, or 1000 when 0)")
    c.add_argument("--output", type=Path, help="weight file to write (default: <output_dir>/<name>_pretrain/encoder.pt)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing weight file")
    _config_args(c)

    c = qsub.add_parser("eval", help=QUALITY_COMMANDS["eval"], description=QUALITY_COMMANDS["eval"])
    c.add_argument("--predictor", required=True, type=Path, help="quality checkpoint (.ckpt) or run folder")
    c.add_argument("dataset", help="dataset folder / CSV / YAML (relative to --data-root if given)")
    add_split_args(c, "predictor")
    c.add_argument("--train-split", default="train",
                   help="split the mask-only baseline is fit on (default: train; 'none' to skip)")
    c.add_argument("--snapshots", type=Path, nargs="*", default=[],
                   help="segmentation checkpoints the predictor never saw (real-mask evaluation)")
    c.add_argument("--output", type=Path, help="folder for quality_eval.{json,md} and plots "
                                               "(default: <predictor run>/eval_<split>)")
    c.add_argument("--data-root", help="base folder for a relative dataset path")
    c.add_argument("--masks-per-image", type=int, default=5)
    c.add_argument("--seed", type=int, default=1234)
    c.add_argument("--max-cases", type=int, help="evaluate only the first N cases (smoke tests)")
    c.add_argument("--tta", action="store_true",
                   help="average predictions over the identity and one flip per spatial axis (slower, steadier)")
    c.add_argument("--device", default="auto")
    add_skip_bad(c)

    c = qsub.add_parser("score", help=QUALITY_COMMANDS["score"], description=QUALITY_COMMANDS["score"] + SCORE_RULE)
    c.add_argument("--predictor", required=True, type=Path, help="quality checkpoint (.ckpt) or run folder")
    c.add_argument("--images", required=True, type=Path, help="folder of images")
    c.add_argument("--masks", required=True, type=Path, help="folder of masks to score (paired by file name)")
    c.add_argument("--mask-pattern", type=mask_pattern,
                   help="mask name pattern, e.g. '{stem}_seg' (default: automatic)")
    c.add_argument("--output", type=Path, default=Path("scores.csv"), help="CSV to write (default: scores.csv)")
    c.add_argument("--flag-below", type=float, help="list cases whose predicted Dice (any class) is below this")
    c.add_argument("--report", type=Path, help="markdown QC report with a histogram of the predicted Dice and "
                                               "the cases to review (default: <output stem>_report.md)")
    c.add_argument("--overlays", type=Path, metavar="DIR",
                   help="write an overlay PNG per flagged case (every case without --flag-below): the mask "
                        "and the predictor's estimate of the true outline")
    c.add_argument("--tta", action="store_true",
                   help="average predictions over the identity and one flip per spatial axis (slower, steadier)")
    c.add_argument("--device", default="auto")
    c.add_argument("--skip-bad", action="store_true",
                   help="list images without a mask, masks without an image and ambiguous pairs as skipped "
                        "(exit 0) instead of failing on them (exit 1); their list is in <output stem>_failures.csv")


def mask_pattern(text: str) -> str:
    """argparse type of ``--mask-pattern``: a file stem with ``{stem}`` where the image's stem goes."""
    try:
        ok = "{stem}" in text and bool(text.format(stem="x"))
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r} must contain {{stem}} (the image's file name without extension) and no other "
            f"{{...}} field, e.g. '{{stem}}_seg' pairs image case1.png with mask case1_seg.png")
    return text


def _device(name: str) -> str:
    from .main import _device as main_device

    return main_device(name)


def cmd_quality_train(args: argparse.Namespace) -> int:
    from ..quality.training import train_quality_predictor
    from .main import _load_cfg

    cfg = _load_cfg(args, args.config)
    run_dir = Path(cfg.output_dir) / cfg.name
    result = train_quality_predictor(cfg, run_dir, resume=args.resume, evaluate=not args.no_eval,
                                     overwrite=args.overwrite)
    if args.no_eval:
        print(f"run folder: {run_dir}  (best val MAE {result['best_val_mae']:.4f} at iteration "
              f"{result['best_iteration']})")
    return 0


def cmd_quality_eval(args: argparse.Namespace) -> int:
    from ..data.detect import open_dataset
    from ..data.io import DataError
    from ..data.run_data import SEEN_BY_PREDICTOR, eval_split_ids, require_clean
    from ..quality.evaluation import evaluate_quality, find_ph2_fixed, largest_errors
    from ..quality.scoring import load_quality_predictor

    scorer = load_quality_predictor(args.predictor, _device(args.device), tta=args.tta)
    path = Path(args.dataset)
    if not path.is_absolute() and args.data_root:
        path = Path(args.data_root) / path
    ds = open_dataset(path, classes=scorer.classes)
    require_clean(ds, args.skip_bad, str(path))
    record = scorer.meta.get("splits")
    ids = eval_split_ids(record, path, ds, args.split, SEEN_BY_PREDICTOR, args.allow_seen, what="predictor")
    ids = ids[:args.max_cases] if args.max_cases else ids
    train_cases = None
    if args.train_split != "none" and args.split != "all":
        try:  # the mask-only baseline is fit on training cases: being seen is what they are for
            train_ids = eval_split_ids(record, path, ds, args.train_split, what="predictor")
        except DataError:
            train_ids = []
        train_cases = [ds.load(i) for i in train_ids] or None
    pred_dir = args.predictor if args.predictor.is_dir() else args.predictor.parent.parent
    out = args.output or pred_dir / f"eval_{args.split}"
    report = evaluate_quality(scorer, [ds.load(i) for i in ids], out, seed=args.seed, k=args.masks_per_image,
                              real_snapshots=args.snapshots, train_cases=train_cases,
                              ph2_fixed=find_ph2_fixed(ds.root), progress=True)
    for name in ("synthetic", "real", "ph2_fixed"):
        if name in report["tables"]:
            print(f"\n{name}:\n{report['tables'][name]}")
    worst = largest_errors(report["synthetic"])
    if worst:
        print("\nlargest synthetic error by " + "; by ".join(worst))
    if "truth_map" in report:
        tm = report["truth_map"]
        groups = tm.get("by_group", {})
        low = f"; lowest group {min(groups, key=groups.get)}: {min(groups.values()):.3f}" if groups else ""
        print(f"predictor's estimate of the truth (true mask given): Dice {tm['dice']:.3f}{low}")
    for name in ("synthetic", "real"):
        u = report.get(name, {}).get("uncertainty")
        if u:
            print(f"{name} score uncertainty: MAE of the 80% most certain {u['mae_at_coverage']['0.8']:.3f} "
                  f"(all {u['mae_at_coverage']['1']:.3f}); detects errors > {u['error_threshold']:g} "
                  f"with AUROC {u['auroc_error']:.3f}")
    sc = report["shortcuts"]
    print(f"\nshortcut tests: black image |Δ| {sc['black_image']['mean_abs_change']:.3f}, "
          f"shuffled images |Δ| {sc['shuffled_images']['mean_abs_change']:.3f}")
    if "mask_only" in report:
        print(f"mask-only baseline: MAE {report['mask_only']['mae']:.3f}, "
              f"Spearman {report['mask_only']['spearman']:.3f}")
    print(f"\nresults in {out} (quality_eval.json, quality_eval.md, plots/)")
    return 0


def cmd_quality_score(args: argparse.Namespace) -> int:
    from ..quality import scoring

    scorer = scoring.load_quality_predictor(args.predictor, _device(args.device), tta=args.tta)
    if args.overlays is not None and not scorer.has_truth_map:
        print("warning: --overlays needs a predictor with a truth-map decoder; none written", file=sys.stderr)
    rows, failures = scoring.score_folder(scorer, args.images, args.masks, args.mask_pattern,
                                          overlay_dir=args.overlays, overlay_below=args.flag_below,
                                          skip_unpaired=args.skip_bad)
    if not rows and not failures.items:
        print(f"error: no (image, mask) pairs found in {args.images} and {args.masks}", file=sys.stderr)
        return 2
    # why always both files: a run with failures must not leave a previous run's CSVs looking current
    scoring.write_scores_csv(rows, args.output, scorer.fg_classes)
    failures_csv = failures.write_csv(args.output.with_name(f"{args.output.stem}_failures.csv"))
    report = None
    if rows:
        report = scoring.write_qc_report(rows, args.report or args.output.with_name(f"{args.output.stem}_report.md"),
                                         scorer.fg_classes, args.flag_below,
                                         source=f"masks {args.masks}, images {args.images}")
    print(f"scored {len(rows)} case(s); predicted Dice per class written to {args.output}"
          + (f"; report {report}" if report else "")
          + (f"; {len(failures.items)} file(s) not scored, listed in {failures_csv}" if failures.items else ""))
    n_overlays = sum("overlay" in r for r in rows)
    if n_overlays:
        print(f"{n_overlays} overlay(s) in {args.overlays} (green: the predictor's estimate of the truth)")
    unsure = [r["case_id"] for r in rows if r.get("unsure")]
    if unsure:
        print(f"{len(unsure)} score(s) the predictor is unsure of (review whatever the score): "
              + ", ".join(unsure[:10]) + (" ..." if len(unsure) > 10 else ""))
    if args.flag_below is not None:
        flagged = scoring.flagged_rows(rows, args.flag_below)
        print(f"{len(flagged)} case(s) with predicted Dice below {args.flag_below} (worst first):")
        for r in flagged:
            per = "  ".join(f"{c}={r[c]:.3f}" for c in scorer.fg_classes)
            print(f"  {r['case_id']}  {per}")
    return failures.report("file(s)")


def cmd_quality_pretrain(args: argparse.Namespace) -> int:
    from ..data.io import DataError
    from ..quality.pretrain import pretrain_encoder
    from .main import _load_cfg

    cfg = _load_cfg(args, args.config)
    out = args.output or Path(cfg.output_dir) / f"{cfg.name}_pretrain" / "encoder.pt"
    if out.exists() and not args.overwrite:
        raise DataError("weight file exists; --overwrite replaces it, or choose another --output", out)
    steps = args.steps or cfg.quality.pretrain.steps or 1000
    res = pretrain_encoder(cfg, out, steps=steps)
    print(f"pretrained the encoder for {res.steps} steps on {res.images} training images "
          f"({', '.join(f'{k} {v}' for k, v in res.image_sources.items())}; never val/test), restoration loss "
          f"{res.first_loss:.4f} -> {res.final_loss:.4f}, {res.wall_s:.0f} s")
    print(f"weights: {out} (record: {out}.json); use them with --set quality.pretrained={out}")
    return 0


def run_quality_command(args: argparse.Namespace) -> int:
    cmd = getattr(args, "quality_command", None)
    if cmd == "train":
        return cmd_quality_train(args)
    if cmd == "eval":
        return cmd_quality_eval(args)
    if cmd == "score":
        return cmd_quality_score(args)
    if cmd == "pretrain":
        return cmd_quality_pretrain(args)
    print("usage: qgseg quality {train,eval,score,pretrain} ... (see qgseg quality --help)", file=sys.stderr)
    return 2
