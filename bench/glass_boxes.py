"""How many final boxes land on glass: the share of a model's final boxes whose centre is not tissue.

With ``sibling_layout=strips`` a head whose strip of its parent holds no tissue puts its box on glass
(docs/BENCHMARKS.md, "A pretrained, frozen what"); ``sibling_layout=tissue_strips`` gives each head a
share of the tissue instead (docs/method.md §9). For each checkpoint this predicts ``--n`` slides evenly
spaced through a manifest (the test set of ``bench/accuracy_vs_pixels.py``), takes the centre of every
final box and looks it up in the slide's tissue map (``magnet.inference.oracle.tissue_map``: the grey
filter's rule on a ``--grid``² read of the whole canvas). Prints one Markdown row per checkpoint: the share
of final boxes on glass, its 95 % bootstrap interval over slides, and the share of slides with at least a
third of their boxes on glass.

    OMP_NUM_THREADS=1 .venv/bin/python bench/glass_boxes.py --manifest /tmp/avp/test/manifest.csv \\
        --n 60 /tmp/avp/magnet-lite0-fixed/fixed-seed1/best.ckpt ...
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from magnet.data.manifest import read_manifest
from magnet.geometry import level0_to_canvas
from magnet.inference.oracle import tissue_map
from magnet.inference.runner import predict_slides
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import load_model


def glass_shares(checkpoint: str, slides: list[str], grid: int) -> list[float]:
    """Per slide, the share of the final boxes whose centre is not tissue."""
    model, config = load_model(checkpoint)
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1)
    predictions = predict_slides(model, slides, pool, batch_size=4)
    shares = []
    for prediction in predictions:
        if prediction.error:
            continue
        tissue = tissue_map(pool.get(prediction.slide), grid)
        dense = np.zeros((grid, grid), dtype=bool)
        dense[tissue.rows.astype(np.int64), tissue.cols.astype(np.int64)] = True
        boxes = torch.tensor(prediction.layers[-1], dtype=torch.float64)  # (N_L, 4) level-0 x0, y0, x1, y1
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        u = level0_to_canvas(centres, prediction.slide_size).numpy()
        cells = np.clip(((u + 1) / 2 * grid).astype(np.int64), 0, grid - 1)
        shares.append(float(1 - dense[cells[:, 1], cells[:, 0]].mean()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--n", type=int, default=60, help="N slides, evenly spaced through the manifest")
    parser.add_argument("--grid", type=int, default=512, help="side of the tissue map of the whole canvas")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = read_manifest(args.manifest, check_slides=False).rows
    slides = [row.slide for row in rows][:: max(1, len(rows) // args.n)][: args.n]
    rng = np.random.default_rng(0)
    print("| checkpoint | slides | final boxes on glass (95 % CI) | slides with ≥ 1/3 on glass |")
    print("|---|---|---|---|")
    for checkpoint in args.checkpoints:
        shares = np.array(glass_shares(checkpoint, slides, args.grid))
        means = [rng.choice(shares, len(shares)).mean() for _ in range(1000)]
        low, high = np.percentile(means, [2.5, 97.5])
        print(f"| {checkpoint} | {len(shares)} | {shares.mean():.2f} ({low:.2f}–{high:.2f}) | "
              f"{(shares >= 1 / 3).mean():.2f} |", flush=True)


if __name__ == "__main__":
    main()
