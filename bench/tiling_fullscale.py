"""Tiling at 20x, end to end, on an exported 100,000² TIFF: measured, beside `magnet predict` on that file.

``bench/fullscale_cost.py`` estimates tiling's cost per full-size slide from measured parts; this bench runs
the tiling baseline's own feature extraction (``magnet.baselines.tiling.features.slide_features``: the
thumbnail, the tissue mask, the tile grid, every tile read through OpenSlide and resized, the frozen
EfficientNet-Lite0 encoder, the feature file written) on the TIFF itself, then the attention MIL on the bag,
and reports seconds (wall and CPU), tiles, pixels decoded, the feature file's size and the peak resident
memory of the process. ``magnet predict``'s numbers on the same file come from ``bench/predict_speed.py``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/tiling_fullscale.py --tiff /tmp/s22/tiff/s101.tif
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from magnet.baselines.tiling.config import TileConfig
from magnet.baselines.tiling.encoder import build_encoder
from magnet.baselines.tiling.features import cache_path, slide_features
from magnet.baselines.tiling.mil import GatedAttentionMIL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiff", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tiles = TileConfig()  # the recipe's defaults: 256-px tiles at 0.5 um/px (20x), >= 25 % tissue
    encoder = build_encoder("efficientnet_lite0")
    with tempfile.TemporaryDirectory(prefix="tiling-fullscale-") as cache:
        wall, cpu = time.perf_counter(), time.process_time()
        item = slide_features(str(args.tiff), tiles, encoder, cache)
        features_wall, features_cpu = time.perf_counter() - wall, time.process_time() - cpu
        disk = cache_path(cache, str(args.tiff), tiles, encoder.name).stat().st_size
    mil = GatedAttentionMIL(item.features.shape[1]).eval()
    start = time.perf_counter()
    with torch.no_grad():
        mil(item.features.float())
    mil_s = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.tiff} ({item.slide_size[0]} x {item.slide_size[1]}), {platform.machine()}, "
          f"{args.threads} torch threads")
    print("| tiles | features s (wall) | features s (CPU) | ms/tile | MIL s | decoded Mpx | output Mpx | "
          "feature file MB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    count = len(item.coords)
    print(f"| {count} | {features_wall:.1f} | {features_cpu:.1f} | {1000 * features_wall / count:.1f} | "
          f"{mil_s:.3f} | {item.pixels_decoded / 1e6:.0f} | {count * tiles.size**2 / 1e6:.0f} | "
          f"{disk / 1e6:.1f} | {peak_mib:.0f} |")


if __name__ == "__main__":
    main()
