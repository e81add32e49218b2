"""``magnet train CONFIG [--set key=value ...] [--out DIR] [--resume [--allow-changes]]``.

The run folder belongs to one run at a time (a second ``magnet train`` on it is refused); ``--resume``
continues ``OUT/last.ckpt`` with the same data, seed, optimiser and loss settings, or, with
``--allow-changes``, with changed ones, recorded in ``OUT/history.jsonl`` (``magnet.training.run_folder``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from magnet.config_io import load_config
from magnet.errors import MagnetError
from magnet.training.recipe import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a MagNet from a recipe YAML")
    p.add_argument("config", help="recipe YAML (configs/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--out", default="", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: accept a changed data, seed, optimiser or loss config (recorded in "
                        "OUT/history.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.training.loop import train

    if args.allow_changes and not args.resume:
        raise MagnetError("--allow-changes: only meaningful with --resume")
    cfg = load_config(TrainConfig, args.config, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    result = train(cfg, out, resume=args.resume, allow_changes=args.allow_changes,
                   show_progress=not args.no_progress)
    best = f"{result.best_score:.3f}" if result.best_score > float("-inf") else "n/a (no validation)"
    print(f"run folder: {result.run_dir}  epochs: {result.epochs_done}  best val AUROC: {best}")
    return 130 if result.interrupted else 0
