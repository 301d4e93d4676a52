"""The ``qgseg`` command line."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

COMMANDS = {
    "demo": "run the main job end to end on built-in procedural demo data",
    "train": "train a segmentation network from a YAML config, then evaluate it on the test split",
    "evaluate": "evaluate a checkpoint on a dataset split (Dice, IoU, HD95, ASD per case and class)",
    "predict": "write predicted masks for an image file or folder",
    "data": "dataset tools: 'data check' reports every problem in a dataset",
    "run": "the whole job: quality predictor (phase 1), guided semi-supervised training (phase 2), test "
           "evaluation and QC of the test predictions",
    "compare": "run a grid of 'qgseg run' variants x seeds sharing one quality predictor, then tabulate test "
               "Dice mean ± std and each guided variant's paired difference against its unguided method",
}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=500 (repeatable)")
    p.add_argument("--data-root", help="base folder for relative dataset paths (e.g. ../shared/data)")
    p.add_argument("--output-dir", help="where run folders are created (default: runs/)")
    p.add_argument("--name", help="run name (default: from the config)")


def _load_cfg(args: argparse.Namespace, source):
    from ..config import load_config

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.name:
        overrides.append(f"name={args.name}")
    return load_config(source, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qgseg", description="Quality-guided semi-supervised medical image segmentation.",
        epilog="Run 'qgseg COMMAND --help' for the options of a command.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"qgseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help=COMMANDS["demo"], description=COMMANDS["demo"])
    p.add_argument("--config", default="demo", help="config preset or YAML (default: demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run (finished runs are kept)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2, for 2 CPU cores)")
    _config_args(p)

    p = sub.add_parser("train", help=COMMANDS["train"], description=COMMANDS["train"])
    p.add_argument("config", help="YAML config file or preset name (demo, ph2, cvc_colondb, acdc)")
    p.add_argument("--resume", action="store_true", help="continue from <run>/checkpoints/last.ckpt")
    p.add_argument("--no-eval", action="store_true", help="skip the final test-split evaluation")
    _config_args(p)

    p = sub.add_parser("run", help=COMMANDS["run"], description=COMMANDS["run"])
    p.add_argument("config", help="YAML config file or preset name (e.g. ssl_demo, ssl_ph2, ssl_acdc)")
    p.add_argument("--variant", help="method variant, e.g. mt, mt-qw, qar, fixmatch-qw+qar (sets ssl.method, "
                                     "guidance.qw, guidance.qar)")
    p.add_argument("--predictor", help="reuse a trained quality predictor (checkpoint or run folder) instead of "
                                       "training one; it is checked for leaks first")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--flag-below", type=float, default=0.7, help="QC: flag test predictions scored below this")
    _config_args(p)

    p = sub.add_parser("compare", help=COMMANDS["compare"], description=COMMANDS["compare"])
    p.add_argument("config", help="YAML config file or preset name, as for 'qgseg run'")
    p.add_argument("--methods", required=True, help="comma-separated variants, e.g. sup,mt,mt-qw,qar")
    p.add_argument("--seeds", default="0", help="comma-separated train.seed values (default: 0)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (CPU: one thread each; GPUs: round-robin)")
    p.add_argument("--predictor", help="use this quality predictor for every run instead of training one for the grid")
    _config_args(p)
    for action in p._actions:
        if action.dest == "name":
            action.help = "grid folder name under the output dir (default: the config's name + '_compare')"

    p = sub.add_parser("evaluate", help=COMMANDS["evaluate"], description=COMMANDS["evaluate"])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("dataset", help="dataset folder / CSV / YAML")
    p.add_argument("--split", default="test", help="split to evaluate (default: test; 'all' for every labeled case)")
    p.add_argument("--output", type=Path, help="folder for CSV/JSON results and overlays")
    p.add_argument("--overlays", type=int, default=4)
    p.add_argument("--device", default="auto")

    p = sub.add_parser("predict", help=COMMANDS["predict"], description=COMMANDS["predict"])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="image file or folder of images")
    p.add_argument("--output", required=True, type=Path, help="folder for the predicted masks")
    p.add_argument("--device", default="auto")
    p.add_argument("--probabilities", action="store_true", help="also save softmax maps as .npy")

    p = sub.add_parser("data", help=COMMANDS["data"], description=COMMANDS["data"])
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    c = dsub.add_parser("check", help="report every problem in a dataset (exit 1 if any), else a summary")
    c.add_argument("dataset", help="dataset folder / CSV / YAML")
    c.add_argument("--classes", nargs="+", help="class names incl. background (default: from the data)")
    c.add_argument("--max-cases", type=int, help="check only the first N cases")

    from .quality import add_quality_parser

    add_quality_parser(sub)
    return parser


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_train(args: argparse.Namespace, source) -> int:
    from ..pipeline import default_run_dir, train_and_evaluate

    cfg = _load_cfg(args, source)
    run_dir = default_run_dir(cfg)
    result = train_and_evaluate(cfg, run_dir, resume=args.resume, evaluate=not args.no_eval)
    if "table" in result:
        print()
        print(result["table"])
        print(f"\nrun folder: {run_dir}  (best val Dice {result['best_val_dice']:.4f} at iteration "
              f"{result['best_iteration']}; wall {result['wall_s']:.0f} s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import default_run_dir, run_guided, variant_overrides

    if args.variant:
        args.overrides = variant_overrides(args.variant) + list(args.overrides)
    if args.predictor:
        args.overrides = list(args.overrides) + [f"guidance.predictor={args.predictor}"]
    cfg = _load_cfg(args, args.config)
    run_guided(cfg, default_run_dir(cfg), resume=args.resume, flag_below=args.flag_below)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import run_compare
    from ..config import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got '{args.seeds}'") from None
    grid = run_compare(args.config, args.methods.split(","), seeds, jobs=args.jobs, output_dir=args.output_dir,
                       name=args.name, overrides=args.overrides, data_root=args.data_root, predictor=args.predictor)
    return 1 if grid.failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..pipeline import run_demo

    cfg = _load_cfg(args, args.config)
    result = run_demo(cfg, resume=args.resume, jobs=args.jobs)
    return 1 if result["failed"] else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data.detect import open_dataset
    from ..evaluation.evaluate import evaluate_segmenter
    from ..pipeline import load_segmenter

    seg = load_segmenter(args.checkpoint, _device(args.device))
    ds = open_dataset(args.dataset, classes=seg.spec.classes)
    if args.split == "all":
        ids = [i for i in ds.ids if ds.has_labels(i)]
    elif args.split in ds.splits:
        ids = ds.splits[args.split]
    else:
        print(f"error: {args.dataset} has no split '{args.split}' (has: {', '.join(ds.splits) or 'none'}); "
              f"use --split all", file=sys.stderr)
        return 2
    ev = evaluate_segmenter(seg, (ds.load(i) for i in ids), out_dir=args.output, overlays=args.overlays,
                            prefix=args.split, total=len(ids))
    print(ev["table"])
    if args.output:
        print(f"results in {args.output}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.case import Case
    from ..data.io import NIFTI_EXTENSIONS, file_ext, is_image_file, read_image, strip_ext, write_mask
    from ..pipeline import load_segmenter

    seg = load_segmenter(args.checkpoint, _device(args.device))
    if args.input.is_dir():
        files = sorted(p for p in args.input.iterdir() if is_image_file(p))
    elif args.input.is_file():
        files = [args.input]
    else:
        print(f"error: {args.input}: no such file or folder", file=sys.stderr)
        return 2
    if not files:
        print(f"error: {args.input}: no image files found", file=sys.stderr)
        return 2
    binary = seg.spec.num_classes == 2
    for path in tqdm(files, desc="predict", dynamic_ncols=True):
        image, info = read_image(path)
        case = Case(strip_ext(path), image, spacing=info.get("spacing"), affine=info.get("affine"),
                    meta={"dtype": info.get("dtype")})
        probs = seg.predict_proba(case)
        mask = probs.argmax(0).astype(np.uint8)
        nifti = file_ext(path) in NIFTI_EXTENSIONS
        out = args.output / (case.case_id + (".nii.gz" if nifti else ".png"))
        write_mask(out, mask, affine=case.affine if nifti else None, binary_as_255=binary)
        if args.probabilities:
            np.save(args.output / f"{case.case_id}_probs.npy", probs.astype(np.float16))
    print(f"wrote {len(files)} mask(s) to {args.output}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset
    from ..data.detect import open_dataset

    ds = open_dataset(args.dataset, classes=args.classes)
    report = check_dataset(ds, max_cases=args.max_cases, progress=True)
    print(report.format())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ..config import ConfigError
    from ..data.io import DataError

    start = time.time()
    try:
        if args.command == "demo":
            code = cmd_demo(args)
        elif args.command == "run":
            code = cmd_run(args)
        elif args.command == "compare":
            code = cmd_compare(args)
        elif args.command == "train":
            code = cmd_train(args, args.config)
        elif args.command == "evaluate":
            code = cmd_evaluate(args)
        elif args.command == "predict":
            code = cmd_predict(args)
        elif args.command == "data":
            if args.data_command != "check":
                parser.parse_args(["data", "--help"])
            code = cmd_data_check(args)
        elif args.command == "quality":
            from .quality import run_quality_command

            code = run_quality_command(args)
        else:  # pragma: no cover - argparse rejects unknown commands
            code = 2
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.time() - start:.0f} s; rerun with --resume to continue", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
