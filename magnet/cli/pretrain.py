"""``magnet pretrain CONFIG --set data.manifest=M --out ENCODER.pt [--steps N] [--seed S]``.

Learns the cell encoder without labels on the patches the recipe's classifier will read (its tree's fixed
layout over the manifest's training slides; ``magnet.training.pretrain``), and writes the weights file a
recipe then names: ``--set model.backbone=cell_encoder --set model.pretrained=true --set
model.backbone_weights=ENCODER.pt``.
"""

from __future__ import annotations

import argparse

from magnet.config_io import load_config
from magnet.errors import MagnetError
from magnet.outputs import output_file
from magnet.training.recipe import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="learn the cell encoder without labels on a recipe's patches")
    p.add_argument("config", help="the recipe YAML the encoder is for (configs/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set data.manifest=M.csv (repeatable)")
    p.add_argument("--out", required=True, help="weights file to write (e.g. runs/encoder.pt)")
    p.add_argument("--steps", type=int, default=600, help="contrastive steps of 256 crop pairs (default 600)")
    p.add_argument("--seed", type=int, default=0, help="seeds the encoder's initialisation and its crops")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.training.contrastive import ContrastiveSettings
    from magnet.training.pretrain import pretrain_recipe

    if args.steps < 1:
        raise MagnetError(f"--steps {args.steps}: must be at least 1")
    output_file(args.out)  # a folder, or a place that cannot be written: found before the work, not after
    cfg = load_config(TrainConfig, args.config, args.overrides)
    if not cfg.data.manifest:
        raise MagnetError(f"{args.config}: no data.manifest (set one with --set data.manifest=M.csv)")
    result = pretrain_recipe(cfg, args.out, ContrastiveSettings(steps=args.steps, seed=args.seed),
                             echo=lambda line: print(f"magnet: {line}", flush=True))
    print(result.summary())
    return 0
