"""How many final patches a zoom needs on version-2 slides when its coarse views cannot tell lesions apart.

On version-2 virtual slides every lesion has benign look-alikes of its size (germinal centres, histiocyte
clusters, large cells; docs/virtual-slides.md) that a classifier only tells from it at about 4 um/px and
finer (docs/BENCHMARKS.md, "Resolution curve"). A zoom whose coarse layers see lesions and look-alikes
alike can at best visit *candidates*: a final patch on each of N of them. Counting the candidates per slide
gives the hit rate such a zoom can reach with N final patches:

- ``blind``: N candidates drawn at random among the C of the slide (its lesion and its look-alikes): the
  lesion is visited with probability min(1, N / C);
- ``ranked a``: the candidates visited are the N that a coarse ranker of AUROC a (lesion against look-alike)
  scores highest: the lesion is visited when fewer than N look-alikes outrank it, under the binormal model
  of such a ranker (``outranked_fewer_than``).

Candidates here are every look-alike plus the slide's lesions (counted once: the largest). No pixels are
rendered, only the slides' layouts (about half a second each)::

    .venv/bin/python bench/candidate_ceiling.py --patches 8 27 36 81 --auroc 0.61 0.75 \
        --test /tmp/zoom-table/data-test/manifest.csv

The slides are the positives of the zoom table's test set (``bench/zoom_table.py`` writes it; without
``--test`` it is made again, which takes minutes: ``make_dataset(1200, 2)``, 70 positives per class).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from statistics import NormalDist

import numpy as np

from magnet.data.manifest import read_manifest
from magnet.synth.anatomy import make_node_layout
from magnet.synth.dataset import make_dataset, take_per_class
from magnet.synth.uri import parse_uri

CLASSES = ("macro", "micro", "itc")


def candidates_per_slide(slides: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Look-alikes + 1 (the lesion) per positive slide ``(uri, lesion class)``, by lesion class."""
    counts: dict[str, list[int]] = defaultdict(list)
    for uri, lesion_class in slides:
        if lesion_class in CLASSES:
            counts[lesion_class].append(len(make_node_layout(parse_uri(uri)).lookalikes) + 1)
    return counts


def outranked_fewer_than(n: int, lookalikes: int, auroc: float, grid: int = 401) -> float:
    """P(fewer than n of ``lookalikes`` outrank the lesion) for a binormal ranker of AUROC ``auroc``.

    Binormal model: look-alike scores ~ N(0, 1), the lesion's ~ N(d, 1), d = sqrt(2) Phi^-1(auroc). Given
    the lesion's score x, each look-alike outranks it independently with probability 1 - Phi(x); the count
    is binomial, and x is integrated out on a grid.
    """
    normal = NormalDist()
    d = math.sqrt(2) * normal.inv_cdf(auroc)
    xs = np.linspace(d - 6, d + 6, grid)
    weights = np.array([NormalDist(d, 1).pdf(x) for x in xs])
    weights /= weights.sum()
    total = 0.0
    for x, w in zip(xs, weights, strict=True):
        p = 1 - normal.cdf(float(x))
        total += w * sum(math.comb(lookalikes, k) * p**k * (1 - p) ** (lookalikes - k)
                         for k in range(min(n, lookalikes + 1)))
    return float(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[8, 27, 36, 81])
    parser.add_argument("--auroc", type=float, nargs="*", default=[0.61])
    parser.add_argument("--test", help="version-2 test manifest (the zoom table's data-test); default: made")
    args = parser.parse_args()
    if args.test:
        slides = [(r.slide, r.lesion_class) for r in read_manifest(args.test, check_slides=False).rows]
    else:  # the zoom table's test set: 70 positives per class of make_dataset(1200, 2)
        made = take_per_class(make_dataset(1200, 2), {"negative": 0, **{c: 70 for c in CLASSES}})
        slides = [(s.uri, s.lesion_class) for s in made]
    counts = candidates_per_slide(slides)
    print("| class | slides | candidates per slide: mean (min–max) |")
    print("|---|---|---|")
    for name in CLASSES:
        c = np.array(counts[name])
        print(f"| {name} | {len(c)} | {c.mean():.1f} ({c.min()}–{c.max()}) |")
    print()
    rankers = [("blind", None)] + [(f"ranked {a:g}", a) for a in args.auroc]
    print("| final patches | zoom | " + " | ".join(f"hit {c}" for c in CLASSES) + " |")
    print("|---" * (2 + len(CLASSES)) + "|")
    for n in args.patches:
        for label, auroc in rankers:
            cells = []
            for name in CLASSES:
                c = np.array(counts[name])
                if auroc is None:
                    hit = np.minimum(1.0, n / c)
                else:
                    hit = np.array([outranked_fewer_than(n, int(k) - 1, auroc) for k in c])
                cells.append(f"{hit.mean():.2f}")
            print(f"| {n} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
