"""The ``qgseg`` command line."""
from __future__ import annotations

import argparse
import errno
import os
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


#: ``--overwrite`` of the commands that train into a run folder.
OVERWRITE_HELP = ("replace the run already in the run folder (its checkpoints, evaluation, logs, plots are "
                  "deleted first); without it, training into a folder that holds a run is refused")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=500 (repeatable)")
    p.add_argument("--data-root", help="base folder for relative dataset paths (e.g. ../shared/data)")
    p.add_argument("--output-dir", help="where run folders are created (default: runs/)")
    p.add_argument("--name", help="run name (default: from the config)")
    add_skip_bad(p)


def add_skip_bad(p: argparse.ArgumentParser) -> None:
    """``--skip-bad``: leave out (and list) cases that cannot be indexed instead of refusing the data."""
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out cases that cannot be read or paired (missing files, image without mask, ...) "
                        "instead of refusing the dataset; they are listed and recorded (same as --set "
                        "data.skip_bad=true)")


def add_split_args(p: argparse.ArgumentParser, model: str) -> None:
    """``--split`` and ``--allow-seen`` of the commands that score a trained ``model`` on a dataset split."""
    p.add_argument("--split", default="test",
                   help=f"split to evaluate (default: test). For the dataset the {model} was trained on, its run's "
                        "stored splits are used (test, val, labeled, unlabeled); 'all' for every labeled case")
    p.add_argument("--allow-seen", action="store_true",
                   help=f"also score cases (patients) the {model} was trained or selected on (refused otherwise)")


def _skip_bad_overrides(args: argparse.Namespace) -> list[str]:
    return ["data.skip_bad=true"] if getattr(args, "skip_bad", False) else []


def _load_cfg(args: argparse.Namespace, source):
    from ..config import load_config

    overrides = list(args.overrides) + _skip_bad_overrides(args)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.name:
        overrides.append(f"name={args.name}")
    cfg = load_config(source, overrides)
    from ..threads import apply_threads

    apply_threads(cfg.runtime.threads)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qgseg", description="Quality-guided semi-supervised medical image segmentation.",
        epilog="Run 'qgseg COMMAND --help' for the options of a command.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"qgseg {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: environment variable QGSEG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help=COMMANDS["demo"], description=COMMANDS["demo"])
    p.add_argument("--config", default="demo", help="config preset or YAML (default: demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run (finished runs are kept)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2, for 2 CPU cores)")
    _config_args(p)

    p = sub.add_parser("train", help=COMMANDS["train"], description=COMMANDS["train"])
    p.add_argument("config", help="YAML config file or preset name (demo, ph2, cvc_colondb, acdc)")
    p.add_argument("--resume", action="store_true", help="continue from <run>/checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--no-eval", action="store_true", help="skip the final test-split evaluation")
    _config_args(p)

    p = sub.add_parser("run", help=COMMANDS["run"], description=COMMANDS["run"])
    p.add_argument("config", help="YAML config file or preset name (e.g. ssl_demo, ssl_ph2, ssl_acdc)")
    p.add_argument("--variant", help="method variant, e.g. mt, mt-qw, qar, fixmatch-qw+qar (sets ssl.method, "
                                     "guidance.qw, guidance.qar)")
    p.add_argument("--predictor", help="reuse a trained quality predictor (checkpoint or run folder) instead of "
                                       "training one; it is checked for leaks first")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
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
    add_split_args(p, "checkpoint")
    p.add_argument("--output", type=Path, help="folder for CSV/JSON results and overlays")
    p.add_argument("--overlays", type=int, default=4)
    p.add_argument("--device", default="auto")
    add_skip_bad(p)

    p = sub.add_parser("predict", help=COMMANDS["predict"], description=COMMANDS["predict"])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="image file or folder of images")
    p.add_argument("--output", required=True, type=Path, help="folder for the predicted masks")
    p.add_argument("--device", default="auto")
    p.add_argument("--probabilities", action="store_true", help="also save softmax maps as .npy")
    p.add_argument("--overwrite", action="store_true",
                   help="replace masks already in --output (refused otherwise). An image that cannot be read "
                        "or predicted is listed at the end and the others are still written (exit 1 if any)")

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
    """``--device`` value -> a torch device string; ``auto`` picks CUDA when there is one.

    Refuses (ConfigError) a device this machine does not have, instead of torch's assertion
    deep inside the first ``.to(device)``."""
    import torch

    from ..config import ConfigError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda} build, no GPU visible" if torch.version.cuda else "CPU build"
            raise ConfigError(f"--device {name}: CUDA is not available on this machine "
                              f"(torch {torch.__version__} {build}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return name


#: Output arguments that must be a folder or a file, per command (``quality eval`` -> "quality eval").
OUTPUT_KINDS: dict[str, dict[str, str]] = {
    "evaluate": {"output": "folder"},
    "predict": {"output": "folder"},
    "quality eval": {"output": "folder"},
    "quality score": {"output": "file", "report": "file", "overlays": "folder"},
}


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "quality_command", None) or getattr(args, "data_command", None)
    return f"{args.command} {sub}" if sub else str(args.command)


def check_output_paths(args: argparse.Namespace) -> None:
    """Refuse an output path of the wrong kind (an existing file where a folder is written, or
    the reverse) before any work is done, rather than failing after minutes of prediction."""
    from ..config import ConfigError

    for dest, kind in OUTPUT_KINDS.get(_command_name(args), {}).items():
        path = getattr(args, dest, None)
        if path is None:
            continue
        path, flag = Path(path), "--" + dest.replace("_", "-")
        if kind == "folder" and path.exists() and not path.is_dir():
            raise ConfigError(f"{flag} {path}: is an existing file, but a folder is expected here "
                              f"(give a new or existing folder)")
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder, but a file is expected here "
                              f"(e.g. {path / ('scores.csv' if dest == 'output' else 'report.md')})")


def _output_of(args: argparse.Namespace) -> str:
    """Where a command writes, for messages about write failures that carry no file name."""
    for dest in ("output", "output_dir", "report", "overlays"):
        value = getattr(args, dest, None)
        if value:
            return str(value)
    return "the output folder"


def _announce_loading(args: argparse.Namespace) -> None:
    """A first line before the seconds of importing torch/MONAI and reading a checkpoint, so
    ``evaluate``/``predict``/``quality eval|score`` do not look hung (on stderr: stdout is results)."""
    ckpt = getattr(args, "checkpoint", None) or getattr(args, "predictor", None)
    if ckpt is not None and _command_name(args) in ("evaluate", "predict", "quality eval", "quality score"):
        print(f"qgseg {_command_name(args)}: loading {ckpt} ...", file=sys.stderr, flush=True)


def _debug_requested(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("QGSEG_DEBUG", "") not in ("", "0")


def format_os_error(exc: OSError, args: argparse.Namespace) -> tuple[str, int]:
    """``(message, exit code)`` for an OSError: disk full names the path written (1); others
    (permission denied, not a folder...) name the path and the system's reason (2)."""
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while writing {exc.filename or _output_of(args)}", 1
    if exc.filename is not None and exc.strerror:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
        return f"{target}: {exc.strerror}", 2
    return str(exc), 2


def cmd_train(args: argparse.Namespace, source) -> int:
    from ..pipeline import default_run_dir, train_and_evaluate

    cfg = _load_cfg(args, source)
    run_dir = default_run_dir(cfg)
    result = train_and_evaluate(cfg, run_dir, resume=args.resume, evaluate=not args.no_eval,
                                overwrite=args.overwrite)
    if "table" in result:
        print()
        print(result["table"])
        dice = result["best_val_dice"]
        chosen = (f"best val Dice {dice:.4f} at iteration {result['best_iteration']}"
                  if result.get("selection", "best").startswith("best") else
                  f"checkpoint: {result['selection']}, iteration {result['best_iteration']}"
                  + (f", val Dice {dice:.4f}" if dice is not None else ""))
        print(f"\nrun folder: {run_dir}  ({chosen}; wall {result['wall_s']:.0f} s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import default_run_dir, run_guided, variant_overrides

    if args.variant:
        args.overrides = variant_overrides(args.variant) + list(args.overrides)
    if args.predictor:
        from ..quality.scoring import load_predictor_checkpoint

        load_predictor_checkpoint(args.predictor)  # why: a wrong file must fail now, not after phase 2 trained
        args.overrides = list(args.overrides) + [f"guidance.predictor={args.predictor}"]
    cfg = _load_cfg(args, args.config)
    run_guided(cfg, default_run_dir(cfg), resume=args.resume, flag_below=args.flag_below, overwrite=args.overwrite)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import run_compare
    from ..config import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got '{args.seeds}'") from None
    grid = run_compare(args.config, args.methods.split(","), seeds, jobs=args.jobs, output_dir=args.output_dir,
                       name=args.name, overrides=list(args.overrides) + _skip_bad_overrides(args),
                       data_root=args.data_root, predictor=args.predictor)
    return 1 if grid.failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..pipeline import run_demo

    cfg = _load_cfg(args, args.config)
    result = run_demo(cfg, resume=args.resume, jobs=args.jobs)
    return 1 if result["failed"] else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data.detect import open_dataset
    from ..data.run_data import SEEN_BY_SEGMENTER, eval_split_ids, require_clean
    from ..engine.checkpoint import load_checkpoint
    from ..evaluation.evaluate import evaluate_segmenter
    from ..pipeline import load_segmenter

    seg = load_segmenter(args.checkpoint, _device(args.device))
    ds = open_dataset(args.dataset, classes=seg.spec.classes)
    require_clean(ds, args.skip_bad, args.dataset)
    record = load_checkpoint(args.checkpoint).get("meta", {}).get("splits")
    ids = eval_split_ids(record, args.dataset, ds, args.split, SEEN_BY_SEGMENTER, args.allow_seen)
    ev = evaluate_segmenter(seg, (ds.load(i) for i in ids), out_dir=args.output, overlays=args.overlays,
                            prefix=args.split, total=len(ids))
    print(ev["table"])
    if args.output:
        print(f"results in {args.output}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..config import ConfigError
    from ..data.case import Case
    from ..data.io import is_image_file, read_image, strip_ext, write_mask
    from ..per_case import CaseFailures
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
    failures = CaseFailures()
    jobs = _predict_outputs(files, args.output, failures)
    outputs = [p for _, mask, probs in jobs for p in (mask, probs if args.probabilities else None) if p is not None]
    existing = [p for p in outputs if p.exists()]
    if existing and not args.overwrite:
        raise ConfigError(f"--output {args.output} already holds {len(existing)} of the {len(outputs)} file(s) this "
                          f"would write (e.g. {existing[0].name}); --overwrite replaces them, or choose another "
                          f"--output")
    written = 0
    for path, out, probs_path in tqdm(jobs, desc="predict", dynamic_ncols=True):
        with failures.case(path):
            image, info = read_image(path)
            case = Case(strip_ext(path), image, spacing=info.get("spacing"), affine=info.get("affine"),
                        meta={"dtype": info.get("dtype"), "image_paths": [str(path)]})
            probs = seg.predict_proba(case)
            mask = probs.argmax(0).astype(np.uint8)
            nifti = out.name.endswith(".nii.gz")
            write_mask(out, mask, affine=case.affine if nifti else None, binary_as_255=binary)
            if args.probabilities:
                np.save(probs_path, probs.astype(np.float16))
            written += 1
    replaced = f", replacing {len(existing)} existing file(s)" if existing else ""
    print(f"wrote {written} mask(s) to {args.output}{replaced}")
    return failures.report("image(s)")


def _predict_outputs(files: list[Path], output: Path, failures) -> list[tuple[Path, Path, Path]]:
    """``(input, mask file, probabilities file)`` per input image. Inputs whose outputs would share a
    name (``x.png`` and ``x.jpg`` both give ``x.png``) are failures (``failures``, a
    :class:`~qgseg.per_case.CaseFailures`) naming each other, not overwrites."""
    from ..data.io import NIFTI_EXTENSIONS, file_ext, strip_ext

    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(strip_ext(path), []).append(path)
    jobs = []
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p.name for p in paths if p != path)
                failures.add(path, f"same name as {others}: their predicted masks would overwrite each other "
                                   f"({stem}.*); rename one or predict them into separate --output folders")
            continue
        path = paths[0]
        ext = ".nii.gz" if file_ext(path) in NIFTI_EXTENSIONS else ".png"
        jobs.append((path, output / f"{stem}{ext}", output / f"{stem}_probs.npy"))
    return jobs


def cmd_data_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset
    from ..data.detect import open_dataset

    ds = open_dataset(args.dataset, classes=args.classes)
    report = check_dataset(ds, max_cases=args.max_cases, progress=True)
    print(report.format())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    from ..threads import set_env_defaults

    set_env_defaults()  # before anything imports torch: OpenMP reads its wait policy once, when loaded
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # why: `qgseg train X --debug` is as natural as `qgseg --debug train X`; accept it anywhere
    debug_anywhere = "--debug" in argv[1:]
    args = parser.parse_args([a for a in argv if a != "--debug"] if debug_anywhere else argv)
    args.debug = args.debug or debug_anywhere
    if args.command is None:
        parser.print_help()
        return 2
    from ..config import ConfigError
    from ..data.io import DataError

    start = time.time()
    debug = _debug_requested(args)
    try:
        check_output_paths(args)
        _announce_loading(args)
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
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.time() - start:.0f} s; rerun with --resume to continue", file=sys.stderr)
        return 130
    except (ConfigError, DataError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug:
            raise
        message, code = format_os_error(exc, args)
        print(f"error: {message}", file=sys.stderr)
        return code
    except Exception as exc:  # anything else: one line, not a traceback (--debug shows it)
        if debug:
            raise
        text = str(exc).strip().splitlines()
        print(f"error: {type(exc).__name__}: {text[0] if text else '(no message)'}\n"
              f"(run with --debug or QGSEG_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
