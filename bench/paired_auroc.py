"""The AUROC difference between two models scored on the same test slides, with a paired bootstrap interval.

Two runs of ``magnet evaluate`` on one test set (their ``predictions.csv``) give, per Table-1 column
(docs/method.md §5: all negatives against the positives of a class), AUROC(B) - AUROC(A) and its 95 %
percentile interval over 2000 stratified bootstrap replicates that resample the *same* slides for both
models (negatives and each class's positives separately), so the test set's own sampling noise, which both
models share, largely cancels (the per-model intervals of ``magnet.metrics.auroc`` do not pair). The
seed-to-seed spread of training is not in it: that needs several seeds per model.

    .venv/bin/python bench/paired_auroc.py A/eval/predictions.csv B/eval/predictions.csv
"""

from __future__ import annotations

import argparse
import csv

import numpy as np

from magnet.metrics.auroc import TABLE1_COLUMNS, auroc_pos_neg


def read(path: str) -> dict[str, tuple[float, str]]:
    """Slide -> (probability, class) of the rows without an error."""
    with open(path, newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if not r["error"]]
    return {r["slide"]: (float(r["probability"]), r["class"]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--replicates", type=int, default=2000)
    args = parser.parse_args()
    a, b = read(args.a), read(args.b)
    slides = sorted(set(a) & set(b))
    classes = np.array([a[s][1] for s in slides])
    pa, pb = np.array([a[s][0] for s in slides]), np.array([b[s][0] for s in slides])
    rng = np.random.default_rng(0)
    negatives = np.flatnonzero(classes == "negative")
    print(f"{len(slides)} slides in both; B - A:")
    for _, title, positive in TABLE1_COLUMNS:
        pos = np.flatnonzero(classes != "negative" if positive is None else np.isin(classes, positive))
        if len(pos) == 0 or len(negatives) == 0:
            continue
        diff = auroc_pos_neg(pb[pos], pb[negatives]) - auroc_pos_neg(pa[pos], pa[negatives])
        reps = []
        for _ in range(args.replicates):
            p, n = rng.choice(pos, len(pos)), rng.choice(negatives, len(negatives))
            reps.append(auroc_pos_neg(pb[p], pb[n]) - auroc_pos_neg(pa[p], pa[n]))
        low, high = np.percentile(reps, [2.5, 97.5])
        print(f"  {title:14s} {diff:+.3f} ({low:+.3f} to {high:+.3f}), {len(pos)} pos / {len(negatives)} neg")


if __name__ == "__main__":
    main()
