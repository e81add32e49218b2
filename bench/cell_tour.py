"""Centred 1-um looks on the cells a readout scores highest: the oracle blind among candidates, without its
ground truth.

A readout refitted from slide labels scores isolated tumour cells (ITC) at 0.86-0.89 when each of a slide's
18 patches is a 221-um box read at 1 um/px and centred on one of its lesion-like spots (the oracle blind
among candidates, ``model.oracle_positives=candidates``, ``model.oracle_side=0.027``), and at 0.43-0.49 on a
tree's own 446-um boxes read at 1 um/px (docs/BENCHMARKS.md, "Isolated tumour cells at 1 um per pixel",
"Every final box read at 1 um per pixel"). The oracle knows where the spots are from the outlines. This
bench asks whether a tree can find them itself: the readout refitted on its own boxes' cells, which cannot
tell an ITC cluster from a look-alike, may still rank both above plain tissue, and so name the candidates.

Per split (train, validation, test):

1. the tree's final boxes per slide (``--tree``: evaluation mode, the zoom as at inference);
2. the cells of those boxes (a ``bench/cell_readout.py`` cache of the same tree, ``--cache``, e.g. read at
   448 px with ``--set model.final_size=448``) scored by a readout refitted on them from slide labels
   (``--readout``: the state ``bench/readout_transfer.py --save`` wrote; a readout refitted on an earlier
   tour's looks, saved the same way, makes a second round);
3. a tour of the best cells: greedily the highest-scoring cell at least one look side from every centre kept
   before, then half a side, then any, until there are as many as the ``--start`` run has final patches;
4. a look of ``--side`` (a fraction of the slide's longer side) centred on each, read from the slide at the
   ``--start`` run's ``final_size`` through the oracle's ROIs (``model.zoom=oracle``), its CNN map cached;
5. the readout over cells refitted on the looks from slide labels (``cell_readout.fit_and_report``, from the
   ``--start`` run's trained head).

Every step uses slide labels only; the outlines serve the report (the share of slides with a look on the
lesion, per class). Outputs: ``NAME-SPLIT.pt`` (``cell_readout``'s cache format, with each slide's look
centres), ``NAME-cells.csv`` (test predictions) and ``NAME-hits.json`` (per positive test slide, its class
and whether a look lies on its lesion); it prints, per class, the AUROC of the slides with a look on the
lesion and of the others against the negatives (``bench/hit_scores.py``'s report). ``--splits train`` and
``--splits test validation`` cache those splits only (two processes side by side); a run with all three
then fits from the caches.

    cd bench; ../.venv/bin/python cell_tour.py --out /tmp/tour --name tour \\
        --tree LEARNED/best-trained.ckpt --cache /tmp/g448/learned448-s2 \\
        --readout /tmp/transfer/learned448-readout.pt --start FIXED/best-trained.ckpt \\
        --data /tmp/avp4/data/manifest.csv --test /tmp/avp4/test/manifest.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from cell_readout import fit_and_report, load_run
from hit_scores import report as report_hits
from hit_scores import tree_boxes

from magnet.data.manifest import read_manifest
from magnet.inference.oracle import OracleZoom
from magnet.metrics.localisation import manifest_outlines, slide_localisation
from magnet.slides.pool import SlidePool
from magnet.training.readout_refit import final_patch_features

ROUNDS = (1.0, 0.5, 0.0)  # the least distance between two centres in each round, in look sides
ORACLE = ("model.zoom=oracle",)


def cell_centres(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Level-0 centres ``(N * height * width, 2)`` of the cells of a ``height x width`` map over each box of
    ``boxes`` ``(N, 4)`` (x0, y0, x1, y1), in the maps' order (box, row, column)."""
    fy = (np.arange(height) + 0.5) / height
    fx = (np.arange(width) + 0.5) / width
    x = boxes[:, None, None, 0] + fx[None, None, :] * (boxes[:, None, None, 2] - boxes[:, None, None, 0])
    y = boxes[:, None, None, 1] + fy[None, :, None] * (boxes[:, None, None, 3] - boxes[:, None, None, 1])
    x, y = np.broadcast_arrays(x, y)
    return np.stack([x.reshape(-1), y.reshape(-1)], axis=1)


def tour(centres: np.ndarray, scores: np.ndarray, count: int, side_px: float) -> np.ndarray:
    """``count`` of ``centres`` ``(M, 2)``, best ``scores`` first, each round keeping its distance from every
    centre kept before (``ROUNDS``, in multiples of ``side_px``)."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for sides in ROUNDS:
        for i in order:
            if len(kept) == count:
                break
            if i in kept:
                continue
            if kept and np.min(np.hypot(*(centres[kept] - centres[i]).T)) < sides * side_px - 1e-9:
                continue
            kept.append(int(i))
    return centres[kept]


class GivenCentres(OracleZoom):
    """Final ROIs centred where a tour put them (level-0 centres by slide name), as the oracle's ROIs."""

    def __init__(self, centres: dict[str, np.ndarray], side: float) -> None:
        super().__init__({}, side)
        self.centres = centres

    def points(self, name, source, count, generator) -> np.ndarray:  # type: ignore[no-untyped-def]
        found = self.centres[name]
        return found[np.arange(count) % len(found)]


def tour_split(args: argparse.Namespace, split: str, manifest: Path) -> dict:
    """The looks of one split: their cached CNN maps, labels, classes and centres (cell_readout's format)."""
    path = args.out / f"{args.name}-{split}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)  # type: ignore[no-any-return]
    t0 = time.perf_counter()
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == split]
    cached = torch.load(f"{args.cache}-{split}.pt", weights_only=False)
    if Path(cached["checkpoint"]) != args.tree:
        raise SystemExit(f"cell_tour: {args.cache}-{split}.pt holds {cached['checkpoint']}'s patches, not "
                         f"{args.tree}'s")
    cache = {s["slide"]: s for s in cached["slides"]}
    missing = [r.slide for r in rows if r.slide not in cache]
    if missing:
        raise SystemExit(f"cell_tour: {args.cache}-{split}.pt lacks {len(missing)} slides, e.g. {missing[0]}")
    scorer, _ = load_run(args.tree, "cells")
    scorer.classifier.load_state_dict(torch.load(args.readout, weights_only=True))
    model, config = load_run(args.start, "cells", overrides=[*ORACLE, f"model.oracle_side={args.side}"])
    count = model.config.patches_at(model.config.num_layers)
    boxes = tree_boxes(args.tree, rows)  # slide -> (boxes, level-0 size)
    centres = {}
    for row in rows:
        maps = cache[row.slide]["maps"].float()  # (N, D, h, w)
        found, size = boxes[row.slide]
        if len(maps) != len(found):
            raise SystemExit(f"cell_tour: {row.slide}: {len(maps)} cached patches, {len(found)} boxes")
        with torch.no_grad():  # the per-patch head on the cached maps (cell_logits would run the CNN again)
            scores = scorer.classifier._head_on_cells(maps, 1, len(maps)).reshape(-1).numpy()
        cells = cell_centres(found, maps.shape[-2], maps.shape[-1])
        centres[row.slide] = tour(cells, scores, count, args.side * max(size))
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    with torch.no_grad():
        data = final_patch_features(model, rows, pool, batch_size=args.batch,
                                    oracle=GivenCentres(centres, args.side))
    pool.close()
    if data.skipped:
        raise SystemExit(f"cell_tour: slides that could not be read: {data.skipped}")
    slides = [{"slide": row.slide, "split": row.split, "label": row.label,
               "class": row.lesion_class or "negative", "maps": maps.half(), "centres": centres[row.slide]}
              for row, maps in zip(rows, data.features, strict=True)]
    result = {"slides": slides, "checkpoint": str(args.start), "tree": str(args.tree), "cache": args.cache,
              "side": args.side}  # checkpoint: the run whose CNN read the looks, as in cell_readout's caches
    torch.save(result, path)
    print(f"{path.stem}: {len(rows)} slides, {time.perf_counter() - t0:.0f} s", flush=True)
    return result


def look_hits(slides: list[dict], manifest: Path, side: float) -> dict[str, tuple[str, bool]]:
    """Positive slide -> (class, whether a look of side ``side`` around its centres overlaps a lesion
    outline), as ``bench/hit_scores.py`` counts a tree's boxes."""
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == "test"]
    outlines = manifest_outlines(rows, manifest.parent) or {}
    pool = SlidePool(grey_filter=False, threads=1, max_open=4)
    found = {}
    for s in slides:
        if s["label"] != 1:
            continue
        size = tuple(pool.get(s["slide"]).slide_size)
        half = side * max(size) / 2
        boxes = np.concatenate([s["centres"] - half, s["centres"] + half], axis=1)
        found[s["slide"]] = (s["class"], slide_localisation(boxes, size, outlines.get(s["slide"], [])).hit)
    pool.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--tree", type=Path, required=True, help="the tree whose boxes' cells are toured")
    parser.add_argument("--cache", required=True, help="bench/cell_readout.py cache prefix of that tree")
    parser.add_argument("--readout", type=Path, required=True,
                        help="the tree's classifier refitted on that cache (readout_transfer.py --save)")
    parser.add_argument("--start", type=Path, required=True,
                        help="checkpoint whose CNN reads the looks and whose head the refit starts from")
    parser.add_argument("--side", type=float, default=0.027,
                        help="a look's side, a fraction of the slide's longer side")
    parser.add_argument("--data", type=Path, required=True,
                        help="manifest with the train and validation splits")
    parser.add_argument("--test", type=Path, required=True, help="manifest with the test split")
    parser.add_argument("--splits", nargs="+", default=["train", "validation", "test"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    slides = {split: tour_split(args, split, args.test if split == "test" else args.data)["slides"]
              for split in args.splits}
    if set(slides) != {"train", "validation", "test"}:
        return  # a split cached on its own, to run beside another process
    found = look_hits(slides["test"], args.test, args.side)
    (args.out / f"{args.name}-hits.json").write_text(json.dumps(found, indent=1))
    fit_and_report(args.name, "cells", args.start, slides, args.out, epochs=args.epochs, seed=args.seed)
    report_hits(args.name, found, str(args.out / f"{args.name}-cells.csv"),
                sorted({cls for cls, _ in found.values()}))


if __name__ == "__main__":
    main()
