"""``qgseg quality ...`` subcommands (quality predictor: train, eval, score)."""
from __future__ import annotations

import argparse

QUALITY_COMMANDS = {
    "train": "train weak snapshots and the quality predictor from a YAML config",
    "eval": "evaluate a quality predictor on held-out cases (synthetic and real network masks)",
    "score": "score any model's masks without ground truth; flag the ones to review",
}


def add_quality_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="quality predictor: train, eval, score",
                       description="Quality predictor g(image, mask) -> predicted Dice.")
    qsub = p.add_subparsers(dest="quality_command", metavar="SUBCOMMAND")
    for name, text in QUALITY_COMMANDS.items():
        qsub.add_parser(name, help=text, description=text)


def run_quality_command(args: argparse.Namespace) -> int:
    raise SystemExit(f"qgseg quality {args.quality_command}: not available yet")
