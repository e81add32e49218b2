"""Cost per slide at full scale: tiling at 20x against a MagNet forward, from measured parts.

A measured end-to-end run of tiling at 20x on a 100,000² slide costs tens of minutes per slide on 2 CPU
cores, and writing such a slide as a TIFF (``magnet synth export``) costs as much again, so this bench
measures the parts and multiplies, and says so:

1. **Tiles per slide**: on ``--slides`` virtual slides of the default size (100,000² at 0.25 um/px, 25 mm),
   the tiling baseline's own tissue mask and grid (``magnet.baselines.tiling.tissue``, the recipe's
   defaults: 256-px tiles at 0.5 um/px, at least 25 % tissue) give the tile count.
2. **Seconds per tile**: a virtual slide of ``--tiff-side`` px at 0.25 um/px is exported as a JPEG pyramidal
   TIFF; its tissue mask (the 1024² thumbnail read from the pyramid) is timed, and 20x tiles (512² level-0
   regions) in its tissue are read through OpenSlide (decode cost per tile does not depend on the file's
   size); the EfficientNet-Lite0 encoder's seconds per 256² tile are measured on
   batches of 32; the attention MIL's forward on a bag of the measured size is timed.
3. **MagNet**: ``tiny`` and ``magnet3`` with random weights (timing only) predict the same TIFF through
   ``magnet.inference`` (model load excluded, the first slide as warm-up); the output pixels each reads per
   slide are the model's (``bench/zoom_table.py``'s ``pixels_per_slide``), independent of the slide's size.

Estimated tiling seconds per slide = mask + tiles x (read + encode) + MIL. Torch runs on ``--threads``
threads throughout.

    OMP_NUM_THREADS=2 .venv/bin/python bench/fullscale_cost.py --out /tmp/fullscale
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from magnet.baselines.tiling.config import TileConfig
from magnet.baselines.tiling.encoder import build_encoder
from magnet.baselines.tiling.mil import GatedAttentionMIL
from magnet.baselines.tiling.tissue import tile_grid, tissue_mask
from magnet.inference.runner import predict_slides
from magnet.models.registry import build_model
from magnet.slides.pool import SlidePool
from magnet.slides.registry import open_slide
from magnet.slides.tiff_writer import write_pyramidal_tiff
from magnet.synth.dataset import make_dataset

sys.path.insert(0, str(Path(__file__).parent))
from zoom_table import pixels_per_slide  # noqa: E402

TILES = TileConfig()  # the recipe's defaults: 256 px at 0.5 um/px


def tiles_per_slide(n: int, seed: int) -> list[dict[str, float]]:
    rows = []
    for slide in make_dataset(n, seed):
        start = time.perf_counter()
        with open_slide(slide.uri) as opened:
            width, height = opened.dimensions
            mpp = opened.mpp[0] if opened.mpp else 0.25
            thumb = opened.thumbnail(TILES.mask_px)
        mask = tissue_mask(thumb, mpp * max(width, height) / max(thumb.shape[:2]),
                           min_saturation=TILES.min_saturation, min_region_mm2=TILES.min_region_mm2,
                           max_hole_mm2=TILES.max_hole_mm2)
        corners = tile_grid(mask, (width, height), TILES.size * TILES.um_per_px / mpp, TILES.min_tissue)
        tissue_mm2 = float(mask.mean()) * width * height * mpp**2 / 1e6
        rows.append({"slide": slide.uri, "tiles": len(corners), "tissue_mm2": tissue_mm2,
                     "render_mask_s": time.perf_counter() - start})
        print(f"{slide.uri}: {len(corners)} tiles at 20x, {tissue_mm2:.0f} mm² tissue", flush=True)
    return rows


def seconds_per_read(tiff: Path, count: int) -> tuple[float, float]:
    """Seconds of the tissue mask (thumbnail read from the pyramid) and of one 20x tile read, on ``tiff``."""
    start = time.perf_counter()
    with open_slide(str(tiff)) as slide:
        width, height = slide.dimensions
        thumb = slide.thumbnail(TILES.mask_px)
        mask = tissue_mask(thumb, 0.25 * max(width, height) / max(thumb.shape[:2]), min_region_mm2=0.0)
        corners = tile_grid(mask, (width, height), TILES.size * TILES.um_per_px / 0.25, TILES.min_tissue)
        mask_s = time.perf_counter() - start
        chosen = corners[np.random.default_rng(0).permutation(len(corners))[:count]]
        side = int(TILES.size * TILES.um_per_px / 0.25)  # level-0 px of a 20x tile on a 40x file
        start = time.perf_counter()
        for x, y in chosen:
            slide.read_region((int(x), int(y)), 0, (side, side))
        return mask_s, (time.perf_counter() - start) / len(chosen)


def seconds_per_encoded_tile() -> float:
    encoder = build_encoder("efficientnet_lite0", batch_size=32)
    tiles = np.random.default_rng(0).integers(0, 256, (32, TILES.size, TILES.size, 3), dtype=np.uint8)
    encoder.encode(tiles)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < 20:
        encoder.encode(tiles)
        done += len(tiles)
    return (time.perf_counter() - start) / done


def seconds_per_mil(tiles: int) -> float:
    model = GatedAttentionMIL(1280).eval()
    bag = torch.randn(tiles, 1280)
    with torch.no_grad():
        model(bag)
        start = time.perf_counter()
        for _ in range(5):
            model(bag)
    return (time.perf_counter() - start) / 5


def magnet_seconds(variant: str, tiff: Path, repeats: int) -> dict[str, float]:
    model = build_model(variant).eval()
    pool = SlidePool(threads=2)
    predict_slides(model, [str(tiff)], pool, batch_size=1)  # warm-up: opening, allocators
    start = time.perf_counter()
    for _ in range(repeats):
        predict_slides(model, [str(tiff)], pool, batch_size=1)
    return {"seconds": (time.perf_counter() - start) / repeats, "pixels": pixels_per_slide(model.config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/fullscale"))
    parser.add_argument("--slides", type=int, default=5)
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--tiff-side", type=int, default=8192)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    counts = tiles_per_slide(args.slides, args.seed)
    tiff = args.out / "virtual.tif"
    if not tiff.exists():
        side = args.tiff_side
        with open_slide(f"synth:seed={args.seed},size={side}x{side},lesion=negative") as slide:
            write_pyramidal_tiff(slide, tiff)
    (mask_s, read_s), encode_s = seconds_per_read(tiff, args.reads), seconds_per_encoded_tile()
    tiles = float(np.mean([c["tiles"] for c in counts]))
    mil_s = seconds_per_mil(int(tiles))
    tiling = {"tiles": tiles, "mask_s": mask_s, "read_s_per_tile": read_s, "encode_s_per_tile": encode_s,
              "mil_s": mil_s, "seconds": mask_s + tiles * (read_s + encode_s) + mil_s,
              "pixels_decoded": tiles * (TILES.size * TILES.um_per_px / 0.25) ** 2,
              "output_pixels": tiles * TILES.size**2, "features_mb": tiles * 1280 * 2 / 1e6}
    magnets = {v: magnet_seconds(v, tiff, args.repeats) for v in ("tiny", "magnet3")}
    result = {"slides": counts, "tiling": tiling, "magnet": magnets, "threads": args.threads,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (args.out / "fullscale.json").write_text(json.dumps(result, indent=1))
    print(f"tiling at 20x, per slide: {tiles:,.0f} tiles ({min(c['tiles'] for c in counts):,}–"
          f"{max(c['tiles'] for c in counts):,}); mask {mask_s:.1f} s, read {read_s * 1e3:.1f} ms/tile, "
          f"encode {encode_s * 1e3:.0f} ms/tile, MIL {mil_s:.2f} s; estimated {tiling['seconds']:,.0f} s; "
          f"{tiling['pixels_decoded'] / 1e6:,.0f} Mpx decoded; features {tiling['features_mb']:.1f} MB")
    for variant, row in magnets.items():
        print(f"{variant}: {row['seconds']:.2f} s per slide (measured), {row['pixels'] / 1e6:.2f} Mpx "
              f"output; tiling / {variant}: {tiling['seconds'] / row['seconds']:,.0f}x seconds, "
              f"{tiling['output_pixels'] / row['pixels']:,.0f}x output pixels")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
