"""Smoke run of the tiling + attention-MIL baseline on a tiny virtual data set, end to end, on one thread.

Makes ``make_dataset(--n, --seed, size=--size, mpp=--mpp)`` (virtual slides), runs the baseline through
``magnet.evaluation.tiling`` (the path of ``magnet baseline tiling``) at a coarse resolution with the random
encoder, and prints pixels decoded and seconds per slide, the feature cache's disk, the Table-1 AUROCs and
the top tiles' hit rate. A check that the path works, not a benchmark of the method: random features at
8 um/px cannot tell version-2 lesions from their look-alikes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tiling_smoke.py --out /tmp/tiling-smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from magnet.baselines.tiling.config import EncoderConfig, MILConfig, TileConfig, TilingConfig
from magnet.evaluation.evaluate import format_localisation
from magnet.evaluation.tiling import run_tiling_baseline
from magnet.metrics.auroc import format_table1
from magnet.synth.dataset import make_dataset, write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="virtual slides")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--size", type=int, default=16384, help="slide side, level-0 pixels")
    parser.add_argument("--mpp", type=float, default=0.5, help="level-0 um/px (0.5: an 8-mm slide)")
    parser.add_argument("--tile", type=int, default=32, help="tile side, pixels")
    parser.add_argument("--um-per-px", type=float, default=8.0, help="tile resolution")
    parser.add_argument("--encoder", default="small_random")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tiling-smoke"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    slides = make_dataset(args.n, args.seed, size=(args.size, args.size), mpp=args.mpp)
    manifest = write_dataset(slides, args.out / "data")
    config = TilingConfig(
        manifest=str(manifest), top_k=8, n_bootstrap=200,
        tiles=TileConfig(size=args.tile, um_per_px=args.um_per_px, mask_px=512),
        encoder=EncoderConfig(name=args.encoder), mil=MILConfig(epochs=args.epochs),
    )
    result, out = run_tiling_baseline(config, args.out / "run")
    total = time.perf_counter() - start
    computed = result.computed
    if computed:
        n = len(computed)
        tiles = sum(len(f.coords) for f in computed) / n
        print(f"slides with features computed: {n}; per slide: {tiles:.0f} tiles, "
              f"{sum(f.pixels_decoded for f in computed) / n / 1e6:.2f} Mpx decoded, "
              f"{sum(f.seconds for f in computed) / n:.2f} s (the first includes the renderer's start-up: "
              f"{max(f.seconds for f in computed):.1f} s)")
    print(f"feature cache: {result.cache_bytes / 1e6:.2f} MB for {len(computed) or 'cached'} slides "
          f"({result.cache_bytes / max(1, len(result.scores) + len(result.skipped)) / 1e3:.0f} kB a slide)")
    print(f"slides left out: {len(result.skipped)}; best epoch {result.trained.best_epoch} of {args.epochs}")
    print(format_table1(result.metrics))
    if result.metrics.get("localisation"):
        print(format_localisation(result.metrics["localisation"]))
    print(f"total {total:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
