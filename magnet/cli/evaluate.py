"""``magnet evaluate CHECKPOINT MANIFEST [--split test] [--out DIR] [--allow-failures]``.

Slides that cannot be read are left out of the metrics and listed, with their error, in
``predictions.csv``; the command says how many on standard error and exits 1, because metrics over part of
a test set are not the metrics asked for. ``--allow-failures`` accepts them (exit 0, the count still shown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magnet.domains import NON_NEGATIVE, AtLeast, arg_type
from magnet.metrics.auroc import format_by_group, format_table1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="Table-1 AUROCs, ROC curve and predictions of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("manifest")
    p.add_argument("--split", default="", help="evaluate only this split of the manifest (e.g. test)")
    p.add_argument("--out", default="", help="output folder (default: beside the checkpoint, eval-<split>)")
    p.add_argument("--batch-size", type=arg_type(int, AtLeast(1)), default=4)
    p.add_argument("--bootstrap", type=arg_type(int, NON_NEGATIVE), default=1000,
                   help="bootstrap resamples for the 95 %% intervals (0: none)")
    p.add_argument("--stain-norm", choices=("none", "reinhard"), default=None,
                   help="stain normalisation of every read (default: the checkpoint's data.stain_norm); "
                   "reinhard moves each slide's colours to the reference statistics (Reinhard et al. 2001)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when some slides could not be read (they are left out of the metrics)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.evaluate import evaluate, failure_summary, format_localisation

    out = args.out or str(Path(args.checkpoint).parent / f"eval-{args.split or 'all'}")
    result = evaluate(args.checkpoint, args.manifest, out, split=args.split,
                      batch_size=args.batch_size, n_bootstrap=args.bootstrap, stain_norm=args.stain_norm)
    print(format_table1(result.metrics))
    if result.metrics.get("by_centre"):
        print(format_by_group(result.metrics["by_centre"]))
    if result.metrics.get("localisation"):
        print(format_localisation(result.metrics["localisation"]))
    print(f"outputs: {result.out_dir} (metrics.json, predictions.csv, roc.png)")
    summary = failure_summary(result)
    if not summary:
        return 0
    print(f"magnet: {'warning' if args.allow_failures else 'error'}: {summary}", file=sys.stderr)
    return 0 if args.allow_failures else 1
