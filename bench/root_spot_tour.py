"""Can a tour of the spots that stand out in a slide's root view find the candidates a blind oracle visits?

On version-3 virtual slides the oracle that puts one final patch on each lesion-like spot (lesions and
look-alikes alike, ``model.oracle_positives=candidates``) beats the fixed layout by +0.05 Macro & Micro
AUROC (docs/BENCHMARKS.md, "Where the heads look"): the headroom of a zoom is *coverage of the candidates*.
This bench asks whether that tour can be had without ground truth, from the root view alone: score every
tissue pixel of a low-resolution read of the whole slide, then tour the peaks, non-maximum suppression in
rounds (a first round keeps peaks 4 box sides apart, so every distinct spot gets a box before any spot
gets two; later rounds 2, 1 and 1/2 box sides), ``--count`` boxes of side ``--side`` times the slide's
longer side (the oracle's patches: 18 of 0.054 on the 112²-view tree). Scorers:

- ``random``: uniform noise on tissue, i.e. the same tour over random tissue points (the floor);
- ``darkspot``: how much darker a spot is than its surroundings, ``blur(I, 8 px) - blur(I, 1 px)`` of the
  brightness (mean RGB) at a 256-px read (31 um/px on an 8-mm slide). Its settings were chosen on
  *training* slides as the variant whose tour reached the most micro lesions among: brighter than the
  surroundings (fine blur 0/1 px, background 4/8/16 px; also of the red channel and of the
  carcinoma-minus-parenchyma colour direction; 40 slides, all toured fewer candidates than random points),
  then darker than the surroundings (fine 1/2/4 px, background 8 px) and the blurred brightness itself
  (sigma 1/2/4 px) on 160 slides; the darker sign was tried after test-slide measurements had shown the
  brighter one failing (docs/BENCHMARKS.md, "A tour of the root view's spots");
- ``heads=CKPT``: the first-layer heads of a trained learned-zoom tree on its own root view (``view_size``
  pixels; each pixel scored by the head whose strip holds it), the learned "where" toured instead of one
  box per strip.

Measured from the slides' outlines (never used by a scorer): the share of each slide's candidates (lesion
and look-alike outlines) a box touches, the share of boxes on a candidate, and the positive slides with a
box on a lesion, per class. Test split only unless ``--split`` says otherwise. With ``--readout NAME=CKPT``
the tour's boxes become the final patches of that checkpoint's tree (its model with ``zoom=oracle``, so
they are read directly, as the oracle's are) and its classifier scores the slides: AUROC per Table-1
column, and ``predictions-SCORER-NAME.csv`` in ``--out`` for ``bench/paired_auroc.py``. With
``--train-config CONFIG`` (a run's resolved ``config.yaml`` with ``model.zoom: oracle``, e.g. the blind
oracle's) a tree is first trained, for each scorer, on that scorer's tour of the training slides (the
product's training loop and readout refit, the oracle's final ROIs replaced by the tour; ``--seed``), and
reads the test slides' tour as readout ``own``::

    OMP_NUM_THREADS=1 .venv/bin/python bench/root_spot_tour.py --test /tmp/avp3/test/manifest.csv \\
        --heads learned=RUN/best.ckpt --readout fixed=FIXED/best.ckpt --out /tmp/spot-tour
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.transforms import Bbox
from patch_targets import box_label, load_with_zoom, outlines
from torch import Tensor

from magnet.config_io import load_config
from magnet.data.manifest import read_manifest
from magnet.evaluation.reports import write_predictions_csv
from magnet.geometry import canvas_to_level0
from magnet.inference.oracle import OracleZoom
from magnet.inference.runner import predict_slides
from magnet.layers.blur import gaussian_blur
from magnet.layers.tissue import tissue_pixels
from magnet.metrics.auroc import table1
from magnet.slides.pixels import GREY_THRESHOLD
from magnet.slides.pool import SlidePool
from magnet.training.loop import Trainer
from magnet.training.recipe import TrainConfig

ROUNDS = (4.0, 2.0, 1.0, 0.5)  # suppression radius of each round, in box sides
CLASSES = ("macro", "micro", "itc")
COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")
_NONE = -1e9  # the score of a pixel that no tour may visit


def tour(score: Tensor, count: int, box_px: float) -> list[tuple[int, int]]:
    """Up to ``count`` (row, col) peaks of ``score`` ``(H, W)`` (pixels at ``_NONE`` excluded): greedy
    non-maximum suppression in the rounds of ``ROUNDS``, each keeping its radius from every peak so far."""
    rows, cols = torch.meshgrid(torch.arange(score.shape[0]), torch.arange(score.shape[1]), indexing="ij")
    picks: list[tuple[int, int]] = []
    for sides in ROUNDS:
        radius2 = (sides * box_px) ** 2
        free = score > _NONE
        for row, col in picks:
            free &= (rows - row) ** 2 + (cols - col) ** 2 >= radius2
        while len(picks) < count and bool(free.any()):
            index = int(torch.where(free, score, torch.full_like(score, _NONE)).argmax())
            row, col = divmod(index, score.shape[1])
            picks.append((row, col))
            free &= (rows - row) ** 2 + (cols - col) ** 2 >= radius2
    return picks


def centres_level0(picks: list[tuple[int, int]], grid: int, slide_size: tuple[int, int]) -> np.ndarray:
    """Level-0 centres ``(N, 2)`` of grid pixels ``picks`` of a ``grid``-pixel read of the whole canvas."""
    if not picks:
        return np.zeros((0, 2))
    canvas = (np.array([[col + 0.5, row + 0.5] for row, col in picks]) * 2 / grid) - 1
    return canvas_to_level0(canvas, slide_size)


def boxes_level0(centres: np.ndarray, slide_size: tuple[int, int], side: float) -> np.ndarray:
    """Level-0 boxes ``(N, 4)`` of side ``side`` x the longer side around ``centres`` ``(N, 2)``."""
    half = side * max(slide_size) / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def root_view(reader, size: int) -> Tensor:  # type: ignore[no-untyped-def]
    """The whole canvas read at ``size`` x ``size``, ``(3, size, size)``."""
    return reader.read(torch.eye(3, dtype=torch.float64)[None], size)[0].float()


class RandomScore:
    """Uniform noise on tissue: the tour over random tissue points."""

    def __init__(self, grid: int, seed: int = 0) -> None:
        self.grid, self.generator = grid, torch.Generator().manual_seed(seed)

    def __call__(self, reader) -> Tensor:  # type: ignore[no-untyped-def]
        tissue = tissue_pixels(root_view(reader, self.grid), GREY_THRESHOLD)
        noise = torch.rand(tissue.shape, generator=self.generator)
        return torch.where(tissue, noise, torch.full_like(noise, _NONE))


class DarkSpotScore:
    """How much darker than its surroundings, on tissue: blur(mean RGB, background) - blur(mean RGB, fine)."""

    def __init__(self, grid: int, fine: float = 1.0, background: float = 8.0) -> None:
        self.grid, self.fine, self.background = grid, fine, background

    def __call__(self, reader) -> Tensor:  # type: ignore[no-untyped-def]
        view = root_view(reader, self.grid)
        bright = view.mean(0)[None, None]
        contrast = (gaussian_blur(bright, self.background) - gaussian_blur(bright, self.fine))[0, 0]
        return torch.where(tissue_pixels(view, GREY_THRESHOLD), contrast, torch.full_like(contrast, _NONE))


class HeadScore:
    """A learned tree's first-layer heads on its root view: each tissue pixel scored by its strip's head."""

    def __init__(self, checkpoint: Path) -> None:
        model, config = load_with_zoom(checkpoint, "")
        if config.model.zoom != "learned":
            raise SystemExit(f"root_spot_tour: {checkpoint} has zoom={config.model.zoom!r}; only a learned "
                             "zoom has heads")
        self.layer = model.layers[0]
        self.grid = config.model.view_size

    @torch.no_grad()
    def __call__(self, reader) -> Tensor:  # type: ignore[no-untyped-def]
        view = root_view(reader, self.grid)
        images = view[None, None]  # (B=1, N_p=1, 3, V, V)
        scores = self.layer.head_maps(images).scores[0].float()  # (K, V, V)
        strips = self.layer.layout.view_masks(images)[0].bool()  # (K, V, V)
        best = torch.where(strips, scores, torch.full_like(scores, _NONE)).amax(0)
        return torch.where(tissue_pixels(view, GREY_THRESHOLD), best, torch.full_like(best, _NONE))


def measure(score, rows, pool: SlidePool, count: int, side: float) -> list[dict]:  # type: ignore[no-untyped-def]
    """Per slide: candidates touched, boxes on a candidate, a box on a lesion."""
    results = []
    for row in rows:
        reader = pool.get(row.slide)
        found = outlines(reader.slide)
        candidates = [path for paths in found.values() for path in paths]
        map_ = score(reader)
        size = tuple(reader.slide_size)
        boxes = boxes_level0(centres_level0(tour(map_, count, side * map_.shape[0]), map_.shape[0], size),
                             size, side)
        bboxes = [Bbox.from_extents(*b) for b in boxes]
        labels = [box_label(b, found, grid=4) for b in boxes]
        touched = sum(any(p.intersects_bbox(b, filled=True) for b in bboxes) for p in candidates)
        results.append({"slide": row.slide, "class": row.lesion_class or "negative", "boxes": len(boxes),
                        "recall": touched / len(candidates) if candidates else None,
                        "on_candidate": float(np.mean([label != "tissue" for label in labels])),
                        "on_lesion": "lesion" in labels})
    pool.close()
    return results


class TourRois(OracleZoom):
    """A scorer's tour as a tree's final ROIs: the oracle's ``rois`` (the step's dihedral map, the ROI
    matrices), its centres from the tour instead of the outlines. The map is scored on the slide's
    unrotated root view."""

    def __init__(self, score, side: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__({}, side)
        self.score = score

    def points(self, name, source, count, generator) -> np.ndarray:  # type: ignore[no-untyped-def]
        map_ = self.score(source)
        picks = tour(map_, count, self.side * map_.shape[0]) or [(map_.shape[0] // 2, map_.shape[1] // 2)]
        picks = [picks[i % len(picks)] for i in range(count)]  # little tissue: boxes repeat
        return centres_level0(picks, map_.shape[0], tuple(source.slide_size))


def read_tour(score, rows, readout: Path, side: float, out: Path) -> dict:  # type: ignore[no-untyped-def]
    """AUROC of ``readout``'s tree with its final patches at the tour of ``score``; predictions to ``out``."""
    model, config = load_with_zoom(readout, "oracle")
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    try:
        preds = predict_slides(model, [r.slide for r in rows], pool, oracle=TourRois(score, side))
    finally:
        pool.close()
    lines = [{"slide": r.slide, "probability": p.probability, "label": r.label, "class": r.lesion_class,
              "error": p.error} for r, p in zip(rows, preds, strict=True)]
    write_predictions_csv(lines, out)
    good = [(r, p) for r, p in zip(rows, preds, strict=True) if not p.error]
    metrics = table1([r.label for r, _ in good], [p.probability for _, p in good],
                     [r.lesion_class or "negative" for r, _ in good])
    return {c: (metrics[c]["auroc"], metrics[c]["ci95"]) for c in COLUMNS}


def train_on_tour(score, config: Path, overrides: list[str], side: float, folder: Path) -> Path:  # type: ignore[no-untyped-def]
    """A tree of ``config`` (with ``overrides``) trained on ``score``'s tour of the training slides; its
    ``best.ckpt``."""
    if not (folder / "best.ckpt").exists():
        cfg = load_config(TrainConfig, config, overrides)
        if cfg.model.zoom != "oracle":
            raise SystemExit(f"root_spot_tour: {config} must have model.zoom: oracle (final ROIs given)")
        trainer = Trainer(cfg, folder, resume=(folder / "last.ckpt").exists(), show_progress=False)
        trainer.oracle = TourRois(score, side)
        trainer.fit()
    return folder / "best.ckpt"


def summarise(results: list[dict]) -> dict:
    """Means over the slides of ``measure``'s results; lesion hits over each class's positives."""
    recall = [r["recall"] for r in results if r["recall"] is not None]
    return {"candidates_touched": float(np.mean(recall)),
            "boxes_on_candidate": float(np.mean([r["on_candidate"] for r in results])),
            "boxes_per_slide": float(np.mean([r["boxes"] for r in results])),
            **{f"lesion_hit_{c}": float(np.mean([r["on_lesion"] for r in results if r["class"] == c]))
               for c in CLASSES if any(r["class"] == c for r in results)},
            "slides": len(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=Path, required=True, help="manifest whose --split rows are toured")
    parser.add_argument("--split", default="test")
    parser.add_argument("--base", nargs="*", default=["random", "darkspot"],
                        choices=("random", "darkspot"), help="scorers that need no checkpoint")
    parser.add_argument("--heads", action="append", default=[],
                        help="NAME=CKPT of a learned tree; repeatable")
    parser.add_argument("--grid", type=int, default=256, help="root read for random and darkspot, pixels")
    parser.add_argument("--blur", type=float, nargs=2, default=(1.0, 8.0), metavar=("FINE", "BACKGROUND"),
                        help="darkspot's two blurs, pixels of the --grid read")
    parser.add_argument("--count", type=int, default=18, help="boxes per slide")
    parser.add_argument("--side", type=float, default=0.054, help="box side, fraction of the longer side")
    parser.add_argument("--readout", action="append", default=[],
                        help="NAME=CKPT whose tree reads the tour's boxes as its final patches; repeatable")
    parser.add_argument("--train-config", type=Path, help="train a tree on each scorer's tour first")
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides of --train-config")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_manifest(args.test, check_slides=False).rows if r.split == args.split]
    base = {"random": lambda: RandomScore(args.grid),
            "darkspot": lambda: DarkSpotScore(args.grid, *args.blur)}
    scorers = {name: base[name]() for name in args.base}
    for item in args.heads:
        name, _, path = item.partition("=")
        scorers[f"heads:{name}"] = HeadScore(Path(path))
    report = {}
    print(f"| scorer | candidates touched | boxes on a candidate | lesion hit: {' / '.join(CLASSES)} |")
    print("|---|---|---|---|")
    for name, score in scorers.items():
        t0 = time.perf_counter()
        pool = SlidePool(grey_filter=True, threads=1, max_open=4)
        results = measure(score, rows, pool, args.count, args.side)
        report[name] = {**summarise(results), "seconds": time.perf_counter() - t0, "per_slide": results}
        s = report[name]
        hits = " / ".join(f"{s.get(f'lesion_hit_{c}', float('nan')):.2f}" for c in CLASSES)
        print(f"| {name} | {s['candidates_touched']:.2f} | {s['boxes_on_candidate']:.2f} | {hits} |",
              flush=True)
    for name, score in scorers.items():
        readouts = list(args.readout)
        if args.train_config:
            folder = args.out / f"train-{name.replace(':', '-')}-seed{args.seed}"
            t0 = time.perf_counter()
            overrides = [f"seed={args.seed}", *args.set]
            best = train_on_tour(score, args.train_config, overrides, args.side, folder)
            report[name]["train_minutes"] = (time.perf_counter() - t0) / 60
            readouts.append(f"own-seed{args.seed}={best}")
        for item in readouts:
            reader_name, _, path = item.partition("=")
            csv = args.out / f"predictions-{name.replace(':', '-')}-{reader_name}.csv"
            report[name][f"auroc:{reader_name}"] = auroc = read_tour(score, rows, Path(path), args.side, csv)
            cells = [f"{c} {v[0]:.2f} ({v[1][0]:.2f}-{v[1][1]:.2f})"
                     for c, v in auroc.items() if v[0] is not None]
            print(f"{name} read by {reader_name}: " + "  ".join(cells), flush=True)
    (args.out / "report.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                      **report}, indent=1))


if __name__ == "__main__":
    main()
