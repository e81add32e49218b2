"""``magnet demo``: the README's main job, end to end on virtual slides.

Makes a virtual data set (URIs only, nothing rendered ahead) of 8.2-mm lymph-node slides, trains
``configs/demo.yaml`` on its train split with validation, evaluates the best checkpoint on a class-enriched
test set (``--test-counts`` negative, macro, micro and ITC slides from the next data-set seed, so that every
class has enough positives for its AUROC) and prints the Table-1 style result. Sized for 2 CPU cores
(docs/BENCHMARKS.md, "The demo"). Everything lands in ``--out``.

The same data set by hand: ``magnet synth dataset --n 220 --seed 0 --size 32768x32768 --test-counts 40 20
20 20 --out DIR``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from magnet.domains import NON_NEGATIVE, AtLeast, arg_type
from magnet.errors import MagnetError
from magnet.outputs import output_folder
from magnet.synth.uri import DEFAULT_VERSION, VERSIONS

# Sized so that the whole demo runs in about 7 minutes on a quiet 2-core machine (docs/BENCHMARKS.md, "The
# demo"); the test set is enriched so that each class's AUROC rests on 20 positives, not the 5-9 of a 15 %
# split.
DEMO_N = 220
DEMO_SIDE = 32_768
DEMO_TEST_COUNTS = (40, 20, 20, 20)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="virtual slides → train → evaluate, on the CPU")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--config", default="configs/demo.yaml", help="training recipe")
    p.add_argument("--n", type=arg_type(int, AtLeast(1)), default=DEMO_N,
                   help=f"virtual slides to train and validate on (default {DEMO_N})")
    p.add_argument("--size", type=arg_type(int, AtLeast(1024)), default=DEMO_SIDE,
                   help=f"side of every slide in pixels at 0.25 um/px (default {DEMO_SIDE}: 8.2 mm)")
    p.add_argument("--test-counts", type=arg_type(int, AtLeast(1)), nargs=4, default=list(DEMO_TEST_COUNTS),
                   metavar=("NEG", "MACRO", "MICRO", "ITC"),
                   help="test slides of each class, from data-set seed SEED + 1 (default %(default)s)")
    p.add_argument("--seed", type=arg_type(int, NON_NEGATIVE), default=0)
    p.add_argument("--version", type=int, choices=VERSIONS, default=None,
                   help=f"virtual-slide generator version (default {DEFAULT_VERSION}; older versions "
                   "reproduce demos recorded before it)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.config_io import load_config
    from magnet.data.lesions import LESION_CLASSES
    from magnet.evaluation.evaluate import evaluate, failure_summary, format_localisation
    from magnet.metrics.auroc import format_table1
    from magnet.synth.dataset import make_dataset, with_enriched_test, write_dataset
    from magnet.training.loop import train
    from magnet.training.recipe import TrainConfig

    if not Path(args.config).is_file():
        raise MagnetError(f"{args.config}: recipe not found (run the demo from the repository root)")
    out = output_folder(args.out)
    start = time.perf_counter()
    version = DEFAULT_VERSION if args.version is None else args.version
    counts = dict(zip(LESION_CLASSES, args.test_counts, strict=True))
    print(f"[1/3] virtual data set: {args.n} slides of {args.size}² (seed {args.seed}, generator version "
          f"{version}), test {sum(counts.values())} slides from seed {args.seed + 1} → {out / 'data'}")
    size = (args.size, args.size)
    slides = make_dataset(args.n, args.seed, size=size, version=version)
    slides = with_enriched_test(slides, counts, args.seed + 1, size=size, version=version)
    manifest = write_dataset(slides, out / "data")
    overrides = [f"data.manifest={manifest}", f"seed={args.seed}", *args.overrides]
    cfg = load_config(TrainConfig, args.config, overrides)
    run_dir = out / "run"
    resume = (run_dir / "last.ckpt").exists()
    print(f"[2/3] training {args.config} → {run_dir}{' (resuming)' if resume else ''}")
    result = train(cfg, run_dir, resume=resume)  # a changed --n, --seed or --set is refused on resume
    if result.interrupted:
        return 130
    print("[3/3] evaluating the best checkpoint on the test split")
    evaluation = evaluate(run_dir / "best.ckpt", manifest, out / "eval-test", split="test")
    print(format_table1(evaluation.metrics))
    if evaluation.metrics.get("localisation"):
        print(format_localisation(evaluation.metrics["localisation"]))
    if failure_summary(evaluation):
        print(f"magnet: warning: {failure_summary(evaluation)}")
    minutes = (time.perf_counter() - start) / 60
    print(f"done in {minutes:.1f} min. Outputs: {run_dir} (checkpoints, metrics.csv, tensorboard), "
          f"{evaluation.out_dir} (metrics.json, predictions.csv, roc.png)")
    return 0
