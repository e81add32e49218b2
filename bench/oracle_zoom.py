"""Oracle upper bound: is the "what" learnable when the "where" is given? (oracle vs random patches)

A zoom control of docs/method.md §8, here outside the model.

For every virtual slide, 8 final patches at one fixed size: **oracle** puts them on the slide's lesions
(positives; random tissue points for negatives), **random** on random tissue points for every slide. The
patches are read through ``RegionReader`` exactly as a MagNet's final patches (grey filter, 112 px), and the
demo's classifier (small CNN → GRU → FC, ``magnet.models.classifier.Classifier``) is trained on them with
slide labels; test AUROC per class. Same pixel budget in both arms; only the location differs. This is the
ceiling a learned zoom at that patch size can approach (docs/method.md §7: ~0.98 in the prototypes).

    .venv/bin/python bench/oracle_zoom.py --n 200 --side 4096 --epochs 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from matplotlib.path import Path as PolygonPath

from magnet.geometry import canvas_side
from magnet.inference.oracle import oracle_rois
from magnet.metrics.auroc import table1
from magnet.models.classifier import Classifier
from magnet.slides.reader import RegionReader
from magnet.slides.registry import open_slide
from magnet.synth.dataset import make_dataset

PATCHES, SIZE = 8, 112


def _points(slide, oracle: bool, rng: np.random.Generator) -> np.ndarray:  # type: ignore[no-untyped-def]
    """PATCHES level-0 centres: inside lesions (oracle, positive slides) or inside tissue."""
    w, h = slide.dimensions
    polygons = [les.shape.polygon() for les in slide.layout.lesions] if oracle else []
    inside = [PolygonPath(p) for p in polygons] or [PolygonPath(s.polygon()) for s in slide.layout.sections]
    boxes = np.array([[*p.vertices.min(0), *p.vertices.max(0)] for p in inside])
    found: list[np.ndarray] = []
    while len(found) < PATCHES:
        k = rng.integers(len(inside))
        x0, y0, x1, y1 = boxes[k]
        point = rng.uniform([x0, y0], [x1, y1])
        if inside[k].contains_point(point) and 0 <= point[0] < w and 0 <= point[1] < h:
            found.append(point)
    return np.array(found)


def _read(uri: str, oracle: bool, side: int, seed: int) -> torch.Tensor:
    slide = open_slide(uri)
    rng = np.random.default_rng(seed)
    centres = _points(slide, oracle and slide.label == 1, rng)
    # Squares of side `side` level-0 px: a fraction side / L of the canvas side.
    rois = oracle_rois(centres, slide.dimensions, side / canvas_side(slide.dimensions))
    with torch.no_grad():
        return RegionReader(slide, threads=1).read(rois, SIZE)


def _arm(slides, oracle: bool, side: int, epochs: int, seed: int):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    patches = torch.stack([_read(s.uri, oracle, side, seed + i) for i, s in enumerate(slides)])
    labels = torch.tensor([float(s.label) for s in slides])
    train = [i for i, s in enumerate(slides) if s.split in ("train", "validation")]
    test = [i for i, s in enumerate(slides) if s.split == "test"]
    torch.manual_seed(seed)
    model = Classifier("small", 128, SIZE)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.tensor(train)[torch.randperm(len(train), generator=g)]
        for batch in order.split(8):
            logit = model(patches[batch]).logit
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(patches[test]).logit).tolist()
    result = table1([slides[i].label for i in test], scores, [slides[i].lesion_class for i in test])
    return result, (time.perf_counter() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--side", type=int, default=4096, help="final patch side in level-0 px")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    slides = make_dataset(args.n, args.seed)
    print(f"{args.n} slides, {PATCHES} patches of {args.side} px (level 0) read at {SIZE} px, "
          f"{args.epochs} epochs")
    print("| patches | Macro | Micro | ITC | Macro & Micro | All | minutes |")
    print("|---|---|---|---|---|---|---|")
    for name, oracle in (("oracle (on lesions)", True), ("random tissue", False)):
        result, minutes = _arm(slides, oracle, args.side, args.epochs, args.seed)
        cells = []
        for key in ("macro", "micro", "itc", "macro_micro", "all"):
            entry = result[key]
            cells.append("–" if entry["auroc"] is None else
                         f"{entry['auroc']:.2f} ({entry['ci95'][0]:.2f}–{entry['ci95'][1]:.2f})")
        print(f"| {name} | " + " | ".join(cells) + f" | {minutes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
