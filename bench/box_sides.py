"""The sides of a trained tree's boxes against the zoom fixed per layer (``model.layer_scales``).

With ``layer_scales`` every box of layer l should be the product of the first l scales of the slide's side.
Before 2026-12-06 the learned zoom sized a box by its map's spread wherever that exceeded the fixed s (eq. 1
of the paper; ``magnet/layers/theta.py``), so some boxes were wider than the recipe says and their patches
read coarser than its µm per pixel. This runs a checkpoint's zoom (heads and reads, no classifier) on test
slides of a manifest and prints, per layer, the share of boxes wider than nominal by more than 1 %, the
widest and the mean side over nominal. Run it with the code of the commit to check.

    PYTHONPATH=. .venv/bin/python bench/box_sides.py RUN/best.ckpt MANIFEST.csv [--slides 40]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from magnet.data.manifest import read_manifest
from magnet.geometry import canvas_side
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import build_offline, checkpoint_config, load_checkpoint, load_weights


@torch.no_grad()
def side_ratios(checkpoint: Path, manifest: Path, slides: int, batch: int = 4) -> dict[int, np.ndarray]:
    """Per layer (1-based): each box's side over the nominal side, on ``slides`` test slides spread over the
    manifest's test split."""
    payload = load_checkpoint(checkpoint)
    config = checkpoint_config(payload, checkpoint)
    if not config.model.layer_scales:
        raise SystemExit(f"box_sides: {checkpoint} has no layer_scales; its boxes have no nominal side")
    model = build_offline(config.model)
    load_weights(model, payload["model"], checkpoint)
    model.eval()
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == "test"]
    rows = rows[:: max(1, len(rows) // slides)][:slides]
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    ratios: dict[int, list[float]] = {}
    for start in range(0, len(rows), batch):
        readers = [pool.get(r.slide) for r in rows[start:start + batch]]
        out = model.zoom_in(readers)
        for layer, boxes in enumerate(out.boxes_level0, start=1):
            nominal = math.prod(config.model.layer_scales[:layer])
            for j, reader in enumerate(readers):
                canvas = canvas_side(reader.slide.dimensions)  # the square canvas of docs/method.md §1
                sides = (boxes[j][:, 2] - boxes[j][:, 0]).double() / canvas
                ratios.setdefault(layer, []).extend((sides / nominal).tolist())
    pool.close()
    return {layer: np.asarray(values) for layer, values in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--slides", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for layer, ratio in side_ratios(args.checkpoint, args.manifest, args.slides).items():
        print(f"layer {layer}: {ratio.size} boxes; wider than nominal by > 1 %: {np.mean(ratio > 1.01):.3f}; "
              f"widest {ratio.max():.3f}; mean {ratio.mean():.4f} x nominal")


if __name__ == "__main__":
    main()
