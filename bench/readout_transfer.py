"""Does a readout fitted on one run's final patches score the lesions in another run's?

A readout refitted from slide labels over the cells of the oracle's 1-um patches (one patch centred on each
lesion-like spot) scores ITC at 0.89 on the version-4 sets; refitted over the cells of a tree's own boxes
read at 1 um/px it scores ITC at 0.43-0.49, and the ITC slides whose boxes touch the cluster score below
the negatives (docs/BENCHMARKS.md, "Every final box read at 1 um per pixel"). Two things differ: what the
boxes show (a cluster centred in a 221-um box, or anywhere in a 446-um one, often at its edge) and what the
readout learned from (clusters always in view, or in view on a third of the ITC slides). This bench
separates them without training anything but the readout: it refits the readout over cells on the cached
maps of one run of ``bench/cell_readout.py`` (``--fit``; the product's refit, as ``cell_readout`` does) and
scores the test slides of every ``--apply`` cache with it. Every cache must come from a run with the
``--start`` run's frozen CNN (checked against the checkpoint each cache names), read at the same um per
pixel, so that a cell means the same in all of them.

``--save`` keeps the refitted classifier's state (``bench/cell_tour.py`` tours the cells it scores highest).
Predictions go to ``FIT-on-APPLY.csv`` (``magnet evaluate``'s columns), so ``bench/hit_scores.py`` can
split the applied run's positives into those whose boxes touch the lesion and those whose boxes do not,
and ``bench/paired_auroc.py`` can pair two readouts on the same slides.

    cd bench; ../.venv/bin/python readout_transfer.py --out /tmp/transfer \\
        --fit oracle1um=/tmp/cells/oracle1um --start FIXED/best-trained.ckpt \\
        --apply learned448=/tmp/cells/learned448
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
from cell_readout import cached, load_run, metrics_line, write_predictions
from cell_readout_mix import same_backbone

from magnet.training.readout_refit import refit_readout


@functools.cache
def shares_cnn(start: Path, other: Path) -> bool:
    """``same_backbone``, read once per pair of checkpoints (every cache of a run names the same one)."""
    return same_backbone(start, other)


def load_split(prefix: str, split: str, start: Path) -> list[dict]:
    """The slides of a ``cell_readout`` cache, refused unless its run's CNN is the ``start`` run's."""
    path = f"{prefix}-{split}.pt"
    cache = torch.load(path, weights_only=False)
    if not shares_cnn(start, Path(cache["checkpoint"])):
        raise SystemExit(f"readout_transfer: {path} was read by {cache['checkpoint']}, whose CNN is not "
                         f"{start}'s: its maps do not mix")
    return cache["slides"]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fit", required=True, metavar="NAME=CACHE_PREFIX",
                        help="cell_readout cache whose train and validation maps the readout is fitted on")
    parser.add_argument("--start", type=Path, required=True,
                        help="checkpoint of the fitted run (its trained head is where the refit starts)")
    parser.add_argument("--apply", action="append", default=[], metavar="NAME=CACHE_PREFIX",
                        help="cell_readout cache whose test maps the fitted readout scores")
    parser.add_argument("--save", type=Path, default=None,
                        help="write the refitted classifier's state here (for bench/cell_tour.py)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    fit_name, fit_prefix = args.fit.split("=", 1)
    readout = load_run(args.start, "cells")[0].classifier
    train, val = (cached(load_split(fit_prefix, split, args.start), "cells")
                  for split in ("train", "validation"))
    result = refit_readout(readout, train, val, epochs=args.epochs, lr=1e-4, weight_decay=1e-4,
                           seed=args.seed)
    print(f"{fit_name}: val {result.val_auroc_before:.3f} -> {result.val_auroc_after:.3f}, pass "
          f"{result.best_epoch} of {result.epochs}, {result.seconds:.0f} s", flush=True)
    del train, val
    if args.save is not None:
        torch.save(readout.state_dict(), args.save)
    for spec in [args.fit, *args.apply]:
        name, prefix = spec.split("=", 1)
        test = load_split(prefix, "test", args.start)
        with torch.no_grad():
            logits = readout.read_out(cached(test, "cells").features).logit.tolist()
        write_predictions(args.out / f"{fit_name}-on-{name}.csv", test, logits)
        line = metrics_line([s["label"] for s in test], logits, [s["class"] for s in test])
        print(f"{fit_name} on {name}: {line}", flush=True)


if __name__ == "__main__":
    main()
