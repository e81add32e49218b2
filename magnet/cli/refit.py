"""``magnet refit RUN [--set refit.epochs=20 ...]``: fit a trained run's readout again on its final patches.

The same stage that ``magnet train`` runs after its last epoch when ``refit.epochs`` > 0
(``magnet.training.readout_refit``, docs/method.md §9), for a run trained without it or to try other refit
settings: the zoom of ``RUN/best.ckpt`` is kept, the classifier's readout is fitted again on the cached
final-patch features of the run's own training slides, and the epoch with the best validation AUROC is
written as ``RUN/best.ckpt``; the checkpoint as training left it stays as ``RUN/best-trained.ckpt`` (a
second refit starts from it again). The run's manifest and splits are the checkpoint's.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from magnet.config_io import apply_override
from magnet.errors import MagnetError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("refit", help="fit a trained run's readout again on its cached final patches")
    p.add_argument("run", help="run folder of `magnet train` (holds best.ckpt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="refit.KEY=VALUE",
                   help="refit setting, e.g. --set refit.epochs=20 (repeatable; default: the run's own, "
                        "20 epochs if it had none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.data.manifest import read_manifest
    from magnet.inference.oracle import OracleZoom
    from magnet.models import zoom_strategy
    from magnet.slides.colour import normaliser
    from magnet.slides.pool import SlidePool
    from magnet.training.checkpoints import checkpoint_config, load_checkpoint
    from magnet.training.readout_refit import TRAINED_CHECKPOINT, refit_run
    from magnet.training.run_folder import RunFolder

    folder = Path(args.run)
    for item in args.overrides:
        if not item.startswith("refit."):
            raise MagnetError(f"--set {item}: only refit.* keys can change in a refit (the rest is the "
                              "run's)")
    source = folder / TRAINED_CHECKPOINT if (folder / TRAINED_CHECKPOINT).exists() else folder / "best.ckpt"
    cfg = checkpoint_config(load_checkpoint(source), source)
    if cfg.refit.epochs == 0 and not any(item.startswith("refit.epochs=") for item in args.overrides):
        cfg = apply_override(cfg, "refit.epochs=20")
    for item in args.overrides:
        cfg = apply_override(cfg, item)
    if cfg.refit.epochs == 0:
        raise MagnetError("--set refit.epochs=0: nothing to refit")
    rows = read_manifest(cfg.data.manifest, check_slides=False).rows
    train_rows = [r for r in rows if r.split == cfg.data.train_split]
    val_rows = [r for r in rows if cfg.data.val_split and r.split == cfg.data.val_split]
    if not train_rows or not val_rows:
        raise MagnetError(f"{cfg.data.manifest}: a refit needs the run's training and validation slides "
                          f"(splits {cfg.data.train_split!r} and {cfg.data.val_split!r})")
    oracle = None
    if zoom_strategy(cfg.model).needs_final_rois:
        oracle = OracleZoom.for_manifest(cfg.model, train_rows + val_rows, Path(cfg.data.manifest).parent,
                                         cfg.data.manifest)
    lock = RunFolder(folder)
    lock.claim()
    pool = SlidePool(grey_filter=cfg.data.grey_filter, threads=cfg.data.reader_threads,
                     max_open=cfg.data.max_open_slides, wrap=normaliser(cfg.data.stain_norm))
    try:
        result = refit_run(folder, train_rows, val_rows, pool, settings=cfg.refit, oracle=oracle,
                           echo=lambda line: print(f"magnet: {line}"))
        lock.record("readout refit", **asdict(result))
    finally:
        pool.close()
        lock.release()
    print(result.summary(folder / "best.ckpt"))
    return 0
