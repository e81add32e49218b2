"""Can the layer-1 heads learn *where* from slide labels alone? Head MIL on cached root views.

A lever of ours, not the paper's (docs/method.md §9).

Reads every slide's 56 x 56 root view once, then trains only the first magnifying layer's localisation
heads (``sibling_layout=strips``, ``head_mil``; no sampler, no classifier) with the head-MIL loss for many
cheap steps, with the 8 dihedral maps as augmentation: the head warm-up of ``magnet.training.warmup``.
Reports, on
the test split, the AUROC of the heads' slide logit per class and where the heads point: the share of
positive slides whose best head's peak (the argmax of its score map) lies on a lesion pixel of the 56 x 56
canvas grid (dilated by one pixel).

    .venv/bin/python bench/head_mil_root.py --data /tmp/exp/mil1/data --steps 1500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from magnet.data.lesions import read_lesions
from magnet.data.manifest import read_manifest
from magnet.metrics.auroc import table1
from magnet.metrics.localisation import lesion_mask
from magnet.models import MagnifyingLayer, model_config
from magnet.slides.pool import SlidePool
from magnet.training.warmup import read_root_views, warm_up_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with manifest.csv and lesions.json")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sharpness", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-std", type=float, default=1e-3)
    parser.add_argument("--highpass", type=float, default=0.0, help="model.head_highpass (0 = off)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rows = list(read_manifest(f"{args.data}/manifest.csv", check_slides=False).rows)
    outlines = read_lesions(f"{args.data}/lesions.json")
    pool = SlidePool(threads=2)
    t0 = time.perf_counter()
    views = read_root_views([pool.get(r.slide) for r in rows], 56)
    masks = []
    for r in rows:
        size = pool.get(r.slide).slide_size
        mask, _ = lesion_mask(outlines.get(r.slide, []), size, grid_cells=56) if outlines.get(r.slide) else (
            np.zeros((56, 56), bool), 0.0)
        grown = torch.from_numpy(mask).float()[None, None]
        masks.append(torch.nn.functional.max_pool2d(grown, 3, 1, 1)[0, 0] > 0)
    print(f"read {len(rows)} root views in {time.perf_counter() - t0:.1f} s")
    labels = torch.tensor([float(r.label) for r in rows])
    train = [i for i, r in enumerate(rows) if r.split in ("train", "validation")]
    test = [i for i, r in enumerate(rows) if r.split == "test"]

    config = model_config("tiny", sibling_layout="strips", head_mil=True, head_mil_sharpness=args.sharpness,
                          head_init_std=args.init_std, head_highpass=args.highpass)
    layer = MagnifyingLayer(config.patches_per_layer[0], config, 1)
    t0 = time.perf_counter()
    losses = warm_up_heads(layer, views[train], labels[train], steps=args.steps, batch_size=args.batch,
                           lr=args.lr, generator=torch.Generator().manual_seed(args.seed))
    for step in range(250, len(losses) + 1, 250):
        print(f"step {step}: mean loss of the last 50 {np.mean(losses[step - 50:step]):.3f}")

    layer.eval()
    with torch.no_grad():
        scores = layer.score_maps(views[test][:, None])
        logits = layer.mil_logit(scores)
        masked = layer.layout.confine(scores, fill=float("-inf"))
        peak = masked.flatten(1).argmax(dim=1) % (56 * 56)
    on_lesion = {c: [] for c in ("macro", "micro", "itc")}
    for k, i in enumerate(test):
        cls = rows[i].lesion_class
        if cls in on_lesion:
            on_lesion[cls].append(bool(masks[i].flatten()[peak[k]]))
    result = table1([rows[i].label for i in test], torch.sigmoid(logits).tolist(),
                    [rows[i].lesion_class for i in test])
    print(f"{args.steps} steps, lr {args.lr}, r {args.sharpness}, {time.perf_counter() - t0:.0f} s")
    for column in ("macro", "micro", "itc", "macro_micro", "all"):
        entry = result.get(column) or {}
        print(f"  AUROC {column}: {entry.get('auroc')}")
    for cls, hits in on_lesion.items():
        print(f"  peak on lesion, {cls}: {np.mean(hits) if hits else float('nan'):.2f} of {len(hits)}")


if __name__ == "__main__":
    main()
