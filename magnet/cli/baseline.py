"""``magnet baseline tiling RECIPE [--set key=value ...] [--out DIR]``: the tiling + attention-MIL baseline.

Trains on the recipe's manifest (train split; validation selects the epoch), scores its test split and
writes ``magnet evaluate``'s outputs (``magnet.evaluation.tiling``). Slides that fail are left out, listed
in ``metrics.json`` and counted on standard error; the run goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magnet.config_io import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("baseline", help="baselines without zoom, on a manifest (tiling + MIL)")
    kinds = p.add_subparsers(dest="baseline", metavar="BASELINE")
    kinds.required = True
    t = kinds.add_parser("tiling", help="tissue tiles, a frozen ImageNet encoder, gated attention MIL")
    t.add_argument("config", help="recipe YAML (configs/baselines/tiling_camelyon.yaml)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set manifest=data/manifest.csv (repeatable)")
    t.add_argument("--out", default="", help="output folder (default: runs/<recipe name>)")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.baselines.tiling.config import TilingConfig
    from magnet.evaluation.evaluate import format_localisation
    from magnet.evaluation.tiling import run_tiling_baseline
    from magnet.metrics.auroc import format_table1

    config = load_config(TilingConfig, args.config, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)

    def show_epoch(row: dict[str, float | None]) -> None:
        print("  " + ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in row.items()),
              flush=True)

    result, folder = run_tiling_baseline(config, out, on_epoch=show_epoch)
    print(format_table1(result.metrics))
    if result.metrics.get("localisation"):
        print(format_localisation(result.metrics["localisation"]))
    print(f"feature cache: {result.cache_bytes / 1e6:.1f} MB in {result.metrics['feature_cache']}")
    print(f"outputs: {folder} (metrics.json, predictions.csv, roc.png, top_tiles.json, mil.ckpt)")
    if result.skipped:
        print(f"magnet: warning: {len(result.skipped)} slides left out (first: {result.skipped[0][0]}: "
              f"{result.skipped[0][1]}); all are listed in {folder / 'metrics.json'}", file=sys.stderr)
    return 0
