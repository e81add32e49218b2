"""Write any ``Slide`` as a JPEG-tiled pyramidal TIFF that OpenSlide opens as a "generic tiled TIFF".

Layout (what OpenSlide's generic-tiff reader expects, https://openslide.org/formats/generic-tiff/):
    - page 0 is level 0, tiled; every further page is a reduced-resolution copy (``NewSubfileType = 1``),
      tiled, each smaller than the one before;
    - JPEG tiles; the data is given as RGB and tifffile stores it the usual way for JPEG in TIFF
      (``Photometric = YCbCr`` with 2x2 chroma subsampling), which OpenSlide and tiffslide decode back to
      RGB (checked by ``tests/slides/test_tiff_writer.py``; giving tifffile ``photometric="ycbcr"`` would
      instead declare RGB data to *be* YCbCr and the colours would come back wrong);
    - ``XResolution`` / ``YResolution`` in pixels per centimetre from ``slide.mpp``, which OpenSlide reports
      as ``openslide.mpp-x`` / ``openslide.mpp-y``.

The writer streams: each level is produced tile by tile with ``slide.read_region`` at that level and handed
to tifffile as an iterator, so no whole level is ever held in memory (the benchmark writes a
40,000 x 40,000 slide this way). The file appears atomically: it is written to a temporary file in the target
folder and renamed over the target only when complete (``magnet.atomic``); on any error, Ctrl-C included,
the temporary file is removed (the command line turns a SIGTERM into the same interruption).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from magnet.atomic import atomic_path
from magnet.errors import MagnetError
from magnet.outputs import output_file
from magnet.slides.base import Slide

# Classic TIFF offsets are 32-bit; above this much *uncompressed* data we switch to BigTIFF so that even a
# badly compressing slide cannot overflow. OpenSlide and tiffslide read both.
_BIGTIFF_ABOVE_BYTES = 2**31


def _tiles(slide: Slide, level: int, tile_size: int) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order, each ``(tile_size, tile_size, 3)`` (edges padded black)."""
    width, height = slide.level_dimensions[level]
    down = slide.level_downsamples[level]
    for ty in range(0, height, tile_size):
        for tx in range(0, width, tile_size):
            # ``location`` is in level-0 pixels. ceil keeps floor(location / down) == tx for backends that
            # floor (memory), and is exact when the downsample is an integer (the usual case).
            location = (math.ceil(tx * down - 1e-9), math.ceil(ty * down - 1e-9))
            tile = slide.read_region(location, level, (tile_size, tile_size))
            if tile.shape != (tile_size, tile_size, 3) or tile.dtype != np.uint8:
                raise MagnetError(
                    f"{slide.path}: read_region returned {tile.shape} {tile.dtype}, "
                    f"expected ({tile_size}, {tile_size}, 3) uint8"
                )
            yield tile


def _check_levels(slide: Slide, levels: Sequence[int] | None) -> list[int]:
    chosen = list(range(slide.level_count)) if levels is None else [int(v) for v in levels]
    if not chosen:
        raise MagnetError(f"{slide.path}: no levels to write")
    if any(not 0 <= v < slide.level_count for v in chosen):
        raise MagnetError(f"{slide.path}: levels {chosen} out of range 0..{slide.level_count - 1}")
    if any(b <= a for a, b in zip(chosen, chosen[1:], strict=False)):
        raise MagnetError(f"{slide.path}: levels must be strictly increasing, got {chosen}")
    return chosen


def write_pyramidal_tiff(
    slide: Slide,
    path: str | Path,
    *,
    tile_size: int = 256,
    quality: int = 90,
    levels: Sequence[int] | None = None,
) -> None:
    """Write ``slide`` to ``path`` as a JPEG-tiled pyramidal TIFF (OpenSlide "generic tiled TIFF").

    Args:
        slide: any backend; read tile by tile with ``read_region``.
        path: the TIFF to create (replaced atomically if it exists).
        tile_size: tile side in pixels; TIFF requires a multiple of 16. 256 is what most scanners use.
        quality: JPEG quality 1..100.
        levels: indices of the slide's levels to write, strictly increasing (default: all). The first one
            becomes the file's base level; its mpp is the slide's mpp times that level's downsample.
    """
    if tile_size <= 0 or tile_size % 16:
        raise MagnetError(f"{path}: tile_size must be a positive multiple of 16, got {tile_size}")
    if not 1 <= quality <= 100:
        raise MagnetError(f"{path}: JPEG quality must be in 1..100, got {quality}")
    chosen = _check_levels(slide, levels)
    target = output_file(path)

    raw_bytes = sum(w * h * 3 for w, h in (slide.level_dimensions[v] for v in chosen))
    with atomic_path(target) as tmp_name:
        with tifffile.TiffWriter(tmp_name, bigtiff=raw_bytes > _BIGTIFF_ABOVE_BYTES) as writer:
            for page, level in enumerate(chosen):
                width, height = slide.level_dimensions[level]
                extra: dict[str, object] = {}
                if slide.mpp is not None:
                    # Pixels per centimetre of *this* page: mpp grows with the level's downsample.
                    scale = slide.level_downsamples[level]
                    extra["resolution"] = (1e4 / (slide.mpp[0] * scale), 1e4 / (slide.mpp[1] * scale))
                    extra["resolutionunit"] = "CENTIMETER"
                writer.write(
                    _tiles(slide, level, tile_size),
                    shape=(height, width, 3),
                    dtype=np.uint8,
                    tile=(tile_size, tile_size),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    subfiletype=0 if page == 0 else 1,
                    metadata=None,  # no tifffile JSON description: readers must see a plain TIFF
                    **extra,  # type: ignore[arg-type]
                )
