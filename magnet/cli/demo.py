"""``magnet demo``: the README's main job, end to end on virtual slides.

Makes a virtual data set (URIs only, nothing rendered ahead), trains ``configs/demo.yaml`` on its train
split with validation, evaluates the best checkpoint on its test split and prints the Table-1 style
result. Sized for 2 CPU cores (15-20 minutes on version-2 slides on a quiet machine; docs/BENCHMARKS.md,
"The demo"). Everything lands in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from magnet.domains import NON_NEGATIVE, AtLeast, arg_type
from magnet.errors import MagnetError
from magnet.outputs import output_folder
from magnet.synth.uri import VERSIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="virtual slides → train → evaluate, on the CPU")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--config", default="configs/demo.yaml", help="training recipe")
    p.add_argument("--n", type=arg_type(int, AtLeast(1)), default=400, help="virtual slides in the data set")
    p.add_argument("--seed", type=arg_type(int, NON_NEGATIVE), default=0)
    p.add_argument("--version", type=int, choices=VERSIONS, default=None,
                   help="virtual-slide generator version (default 2; 1 reproduces demos recorded before it)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.config_io import load_config
    from magnet.evaluation.evaluate import evaluate, failure_summary, format_localisation
    from magnet.metrics.auroc import format_table1
    from magnet.synth.dataset import DEFAULT_VERSION, make_dataset, write_dataset
    from magnet.training.loop import train
    from magnet.training.recipe import TrainConfig

    if not Path(args.config).is_file():
        raise MagnetError(f"{args.config}: recipe not found (run the demo from the repository root)")
    out = output_folder(args.out)
    start = time.perf_counter()
    version = DEFAULT_VERSION if args.version is None else args.version
    print(f"[1/3] virtual data set: {args.n} slides (seed {args.seed}, generator version {version}) "
          f"→ {out / 'data'}")
    manifest = write_dataset(make_dataset(args.n, args.seed, version=version), out / "data")
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
