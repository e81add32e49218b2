"""Can the readout over cells tell a lesion from its look-alikes when it reads nothing else?

Under the lesion oracle (``model.zoom=oracle``) a positive slide's final patches all lie on its lesion and a
negative slide's on plain tissue; refitted over cells it scores ITC at 0.83 on the version-4 sets. Under the
oracle blind among candidates (``model.oracle_positives=candidates``) every slide's patches tour its lesions
and look-alikes alike, and ITC falls to 0.56 (docs/BENCHMARKS.md, "More seeds of the refit over cells").
Two things changed between them: a positive slide's ITC cluster is read by one patch instead of all, and a
negative slide's patches lie on look-alikes instead of tissue. This bench separates them without training
anything: it takes the positives of one cached run of ``bench/cell_readout.py`` and the negatives of
another, for every split, and fits the two readouts on the mix with ``cell_readout.fit_and_report`` (the
product's refit from the ``--start`` run's trained head; outputs named ``POS+NEG-KIND[-trained].csv``).
Both runs must share the frozen CNN, so that their maps are the same function of the pixels: the bench
checks that the backbones' weights are identical.

With ``--positives oracle`` (the lesion oracle's) and ``--negatives candidates1`` (the blind oracle's, whose
negative slides' patches tour their look-alikes, each outline once before any twice), the mix is the oracle
with the negatives on look-alikes (``model.oracle_negatives=lookalikes``) read over cells: the ceiling of
the "what" at 2 um/px when the "where" is perfect.

    cd bench; ../.venv/bin/python cell_readout_mix.py --out /tmp/mix \\
        --positives oracle=/tmp/s48/cells/oracle --negatives candidates1=/tmp/s49/cells/candidates1 \\
        --start CANDIDATES1/best-trained.ckpt --check ORACLE/best-trained.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from cell_readout import fit_and_report

from magnet.training.checkpoints import load_checkpoint


def same_backbone(first: Path, second: Path) -> bool:
    """Whether two checkpoints' classifier CNNs have identical weights."""
    a, b = (load_checkpoint(path)["model"] for path in (first, second))
    keys = [k for k in a if k.startswith("classifier.backbone.")]
    return bool(keys) and all(k in b and torch.equal(a[k], b[k]) for k in keys)


def mix(positives: str, negatives: str, split: str) -> list[dict]:
    """The positive slides of cache ``positives`` and the negative ones of ``negatives`` for ``split``."""
    pos = [s for s in torch.load(f"{positives}-{split}.pt", weights_only=False)["slides"] if s["label"] == 1]
    neg = [s for s in torch.load(f"{negatives}-{split}.pt", weights_only=False)["slides"] if s["label"] == 0]
    return pos + neg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--positives", required=True, metavar="NAME=CACHE_PREFIX")
    parser.add_argument("--negatives", required=True, metavar="NAME=CACHE_PREFIX")
    parser.add_argument("--start", type=Path, required=True,
                        help="checkpoint whose trained head the refit starts from")
    parser.add_argument("--check", type=Path, required=True, help="the other run's checkpoint (same CNN?)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not same_backbone(args.start, args.check):
        raise SystemExit(f"{args.start} and {args.check}: the classifier CNNs differ, so their maps do not "
                         "mix")
    (pos_name, pos_prefix), (neg_name, neg_prefix) = (spec.split("=", 1)
                                                      for spec in (args.positives, args.negatives))
    args.out.mkdir(parents=True, exist_ok=True)
    slides = {split: mix(pos_prefix, neg_prefix, split) for split in ("train", "validation", "test")}
    for kind in ("patch", "cells"):
        fit_and_report(f"{pos_name}+{neg_name}", kind, args.start, slides, args.out, epochs=args.epochs,
                       seed=args.seed)


if __name__ == "__main__":
    main()
