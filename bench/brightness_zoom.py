"""How far does a zoom get that finds lesion-like spots by colour alone? A trained tree with its heads
replaced by the view's brightness.

On version-3 virtual slides the last layer's learned heads rank no pixel kind above another, while the
view's brightness ranks lesion-like spots (lesions and their look-alikes) above plain tissue at every layer
(``bench/head_maps.py``), and an oracle that visits every such spot without knowing which is the lesion
beats the fixed layout (docs/BENCHMARKS.md, "Where the heads look"). This bench asks what a zoom that
follows brightness alone gets *inside the tree*: its boxes keep the trained run's sizes, strips and sampler,
only the heads' maps are replaced. Each head's score map is its parent view's brightness (mean RGB,
Gaussian-blurred with ``--sigma`` view pixels) on tissue pixels (max - min RGB >= 15 of 255) and 0
elsewhere; its logits are the scores times ``--temperature``, so the spatial sparsemax keeps the brightest
part of the head's strip; the box goes there with ``model.box_centre`` (``--centre``). Nothing is learned.

The final patches are read by the classifier of ``--readout`` (a checkpoint of the same architecture, e.g.
the fixed layout's run, trained on patches it did not choose), and the test predictions are written as
``magnet evaluate`` writes them, so ``bench/paired_auroc.py`` pairs them with that run's own::

    OMP_NUM_THREADS=1 .venv/bin/python bench/brightness_zoom.py --checkpoint LEARNED/best.ckpt \\
        --readout FIXED/best.ckpt --test /tmp/avp3/test/manifest.csv --out /tmp/brightness
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from patch_targets import box_label, outlines
from torch import Tensor, nn

from magnet.data.manifest import read_manifest
from magnet.evaluation.reports import write_predictions_csv
from magnet.layers.blur import gaussian_blur
from magnet.layers.heads import HeadMaps
from magnet.layers.tissue import tissue_pixels
from magnet.metrics.auroc import table1
from magnet.models.zoom_levers import HeadInput
from magnet.slides.pixels import GREY_THRESHOLD
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import build_offline, checkpoint_config, load_checkpoint, load_weights

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")


class BrightnessHeads(nn.Module):
    """Every head's score map is its parent view's blurred brightness on tissue, 0 elsewhere."""

    def __init__(self, num_heads: int, sigma: float, temperature: float) -> None:
        super().__init__()
        self.num_heads, self.sigma, self.temperature = num_heads, sigma, temperature

    def forward(self, images: Tensor) -> HeadMaps:
        batch, parents, _, height, width = images.shape
        flat = images.flatten(0, 1)
        tissue = tissue_pixels(flat, GREY_THRESHOLD)
        bright = torch.where(tissue, gaussian_blur(flat, self.sigma).mean(1), torch.zeros(()))
        per_parent = self.num_heads // parents
        scores = bright.view(batch, parents, 1, height, width).expand(-1, -1, per_parent, -1, -1)
        scores = scores.reshape(batch, self.num_heads, height, width)
        return HeadMaps(scores=scores, logits=scores * self.temperature)


def brightness_model(checkpoint: Path, readout: Path, centre: str, sigma: float, temperature: float):  # type: ignore[no-untyped-def]
    """``checkpoint``'s learned tree with brightness heads and ``readout``'s classifier, in eval mode."""
    payload = load_checkpoint(checkpoint)
    config = checkpoint_config(payload, checkpoint)
    if config.model.zoom != "learned":
        raise SystemExit(f"brightness_zoom: {checkpoint} must be a learned-zoom run (its head-MIL keys)")
    model = build_offline(replace(config.model, box_centre=centre))
    weights = dict(payload["model"])
    other = load_checkpoint(readout)["model"]
    weights.update({k: v for k, v in other.items() if k.startswith("classifier.")})
    load_weights(model, weights, checkpoint)
    for layer in model.layers:
        layer.heads = BrightnessHeads(layer.num_heads, sigma, temperature)
        layer.head_input = HeadInput()  # the raw view: brightness is what local contrast removes
    return model.eval(), config


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a learned-zoom run's checkpoint")
    parser.add_argument("--readout", type=Path, required=True, help="the checkpoint whose classifier reads")
    parser.add_argument("--test", type=Path, required=True, help="manifest whose test split is read")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--centre", choices=("mean", "peak"), default="peak", help="model.box_centre")
    parser.add_argument("--sigma", type=float, default=3.0, help="brightness blur, view pixels")
    parser.add_argument("--temperature", type=float, default=200.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model, config = brightness_model(args.checkpoint, args.readout, args.centre, args.sigma, args.temperature)
    rows = [r for r in read_manifest(args.test, check_slides=False).rows if r.split == "test"]
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    predictions, hits = [], []
    t0 = time.perf_counter()
    for start in range(0, len(rows), args.batch):
        chunk = rows[start:start + args.batch]
        readers = [pool.get(r.slide) for r in chunk]
        out = model(readers)
        for j, (row, reader) in enumerate(zip(chunk, readers, strict=True)):
            predictions.append({"slide": row.slide, "probability": float(torch.sigmoid(out.logit[j])),
                                "label": row.label, "class": row.lesion_class or "negative", "error": ""})
            if row.label:
                found = outlines(reader.slide)
                boxes = out.boxes_level0[-1][j].double().cpu().numpy()
                hits.append((row.lesion_class, any(box_label(b, found) == "lesion" for b in boxes)))
        pool.close()
        if (start // args.batch) % 10 == 0:
            print(f"{start + len(chunk)}/{len(rows)} slides, {time.perf_counter() - t0:.0f} s", flush=True)
    write_predictions_csv(predictions, args.out / "predictions.csv")
    metrics = table1([p["label"] for p in predictions], [p["probability"] for p in predictions],
                     [p["class"] for p in predictions])
    hit_rates = {c: float(np.mean([h for k, h in hits if k == c])) for c in ("macro", "micro", "itc")}
    report = {"auroc": {c: (metrics[c]["auroc"], metrics[c]["ci95"]) for c in COLUMNS}, "hit": hit_rates,
              "seconds_per_slide": (time.perf_counter() - t0) / len(rows), "args": {
                  k: str(v) for k, v in vars(args).items()}}
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print("AUROC:", {c: v[0] if v[0] is None else round(v[0], 3) for c, v in report["auroc"].items()})
    print("final patch on the lesion:", {c: round(v, 3) for c, v in hit_rates.items()})


if __name__ == "__main__":
    main()
