"""The AUROC difference between two models scored on the same test slides, with a paired bootstrap interval.

Two runs of ``magnet evaluate`` on one test set (their ``predictions.csv``) give, per Table-1 column
(docs/method.md §5: all negatives against the positives of a class), AUROC(B) - AUROC(A) and its 95 %
percentile interval over 2000 stratified bootstrap replicates that resample the *same* slides for both
models (negatives and each class's positives separately), so the test set's own sampling noise, which both
models share, largely cancels (the per-model intervals of ``magnet.metrics.auroc`` do not pair). The
seed-to-seed spread of training is not in it: that needs several seeds per model.

    .venv/bin/python bench/paired_auroc.py A/eval/predictions.csv B/eval/predictions.csv

``--same-layout`` pairs virtual slides by their layout, not their URI: a slide and its rendering at another
centre (``centre=`` in the URI, magnet.synth.centres) are one slide, so one model scored in-centre (A) and at
a held-out centre (B) gives the cost of the shift, paired.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace

import numpy as np

from magnet.metrics.auroc import TABLE1_COLUMNS, auroc_pos_neg
from magnet.synth.centres import DEFAULT_CENTRE
from magnet.synth.uri import SCHEME, parse_uri


def layout(slide: str) -> str:
    """A virtual slide's URI at the reference centre (other slides as they are)."""
    if not slide.startswith(f"{SCHEME}:"):
        return slide
    return replace(parse_uri(slide), centre=DEFAULT_CENTRE).uri


def read(path: str, same_layout: bool = False) -> dict[str, tuple[float, str]]:
    """Slide -> (probability, class) of the rows without an error; keyed by layout with ``same_layout``."""
    with open(path, newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if not r["error"]]
    key = layout if same_layout else str
    return {key(r["slide"]): (float(r["probability"]), r["class"]) for r in rows}


def paired_differences(classes: np.ndarray, pa: np.ndarray, pb: np.ndarray, replicates: int = 2000,
                       seed: int = 0) -> list[tuple[str, float, float, float, int, int]]:
    """Per Table-1 column: (title, AUROC(b) - AUROC(a), 2.5 and 97.5 percentiles of the paired stratified
    bootstrap, positives, negatives) for scores ``pa`` and ``pb`` of the same slides of ``classes``."""
    rng = np.random.default_rng(seed)
    negatives = np.flatnonzero(classes == "negative")
    rows = []
    for _, title, positive in TABLE1_COLUMNS:
        pos = np.flatnonzero(classes != "negative" if positive is None else np.isin(classes, positive))
        if len(pos) == 0 or len(negatives) == 0:
            continue
        diff = auroc_pos_neg(pb[pos], pb[negatives]) - auroc_pos_neg(pa[pos], pa[negatives])
        reps = []
        for _ in range(replicates):
            p, n = rng.choice(pos, len(pos)), rng.choice(negatives, len(negatives))
            reps.append(auroc_pos_neg(pb[p], pb[n]) - auroc_pos_neg(pa[p], pa[n]))
        low, high = np.percentile(reps, [2.5, 97.5])
        rows.append((title, float(diff), float(low), float(high), len(pos), len(negatives)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--same-layout", action="store_true",
                        help="pair a virtual slide with its rendering at another centre")
    args = parser.parse_args()
    a, b = read(args.a, args.same_layout), read(args.b, args.same_layout)
    slides = sorted(set(a) & set(b))
    classes = np.array([a[s][1] for s in slides])
    pa, pb = np.array([a[s][0] for s in slides]), np.array([b[s][0] for s in slides])
    print(f"{len(slides)} slides in both; B - A:")
    for title, diff, low, high, n_pos, n_neg in paired_differences(classes, pa, pb, args.replicates):
        print(f"  {title:14s} {diff:+.3f} ({low:+.3f} to {high:+.3f}), {n_pos} pos / {n_neg} neg")


if __name__ == "__main__":
    main()
