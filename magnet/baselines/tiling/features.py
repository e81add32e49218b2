"""Tile features of one slide, computed once and cached on disk: one ``.pt`` file per slide.

Each file holds the frozen encoder's features of every tissue tile (``float16`` [choice]: half the disk of
``float32``, and a frozen ImageNet encoder's features lose nothing the MIL head can use), the tiles' top-left
corners in level-0 pixels, their side in level-0 pixels, the slide's level-0 size and pixel size, the tile
size and microns per pixel, and the encoder's name: everything needed to train, score and localise without
opening the slide again (CLAM's and TRIDENT's ``.h5`` per slide hold features and coordinates the same way).

The file name is a hash of the slide (its real path with size and modification time, or its canonical URI),
of every tile setting and of the encoder's name, so a change of any of them computes new features instead
of reusing stale ones; files are written atomically (``magnet.atomic``), so an interrupted run leaves none
half-written.

Tiles are read with ``Slide.read_region`` at the coarsest pyramid level whose pixels are no larger than the
target's (``get_best_level_for_downsample``), then resized to ``size x size`` (Pillow's antialiased
bilinear filter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from magnet.atomic import atomic_path
from magnet.baselines.tiling.config import TileConfig
from magnet.baselines.tiling.encoder import TileEncoder
from magnet.baselines.tiling.tissue import tile_grid, tissue_mask
from magnet.errors import MagnetError
from magnet.slides.base import Slide
from magnet.slides.registry import open_slide, slide_identity

__all__ = ["FORMAT", "SlideFeatures", "cache_path", "load_features", "save_features", "slide_features"]

# Bumped when the file's content changes meaning, so old caches are recomputed, not misread.
FORMAT = 1


@dataclass
class SlideFeatures:
    """A slide's tiles and their features (what a cache file holds), with the cost of computing them."""

    slide: str
    features: Tensor  #: ``(N, D)`` float16
    coords: Tensor  #: ``(N, 2)`` int64, tiles' top-left corners (x, y), level-0 pixels
    tile_side: float  #: tile side in level-0 pixels
    slide_size: tuple[int, int]  #: level-0 (width, height)
    mpp: float  #: level-0 microns per pixel
    tile_px: int
    um_per_px: float
    encoder: str
    pixels_decoded: int = 0  #: 0 when read from the cache
    seconds: float = 0.0  #: 0 when read from the cache

    def boxes(self, index: Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
        """Level-0 boxes ``(k, 4)`` (x0, y0, x1, y1) of the tiles ``index``."""
        corners = self.coords[torch.as_tensor(index, dtype=torch.long)].double().numpy().reshape(-1, 2)
        return np.concatenate([corners, corners + self.tile_side], axis=1)


def cache_path(cache_dir: str | os.PathLike[str], spec: str, tiles: TileConfig, encoder: str) -> Path:
    """The cache file of ``spec``'s features under these tile settings and this encoder."""
    identity = slide_identity(spec)
    stamp = ""
    if Path(identity).is_file():  # a file that changes gets new features
        stat = Path(identity).stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    key = json.dumps([FORMAT, identity, stamp, dataclasses.asdict(tiles), encoder], sort_keys=True)
    return Path(cache_dir) / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.pt"


def save_features(item: SlideFeatures, path: str | os.PathLike[str]) -> None:
    """Write ``item`` to ``path`` atomically."""
    payload = {
        "format": FORMAT, "slide": item.slide, "features": item.features, "coords": item.coords,
        "tile_side": item.tile_side, "slide_size": list(item.slide_size), "mpp": item.mpp,
        "tile_px": item.tile_px, "um_per_px": item.um_per_px, "encoder": item.encoder,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_features(path: str | os.PathLike[str]) -> SlideFeatures:
    """Read a cache file written by ``save_features`` (tensors and plain values only: ``weights_only``)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MagnetError(f"{path}: not a tile feature file of format {FORMAT}; delete it to recompute")
    width, height = data["slide_size"]
    return SlideFeatures(
        data["slide"], data["features"], data["coords"], float(data["tile_side"]), (int(width), int(height)),
        float(data["mpp"]), int(data["tile_px"]), float(data["um_per_px"]), str(data["encoder"]),
    )


def slide_features(
    spec: str, tiles: TileConfig, encoder: TileEncoder, cache_dir: str | os.PathLike[str]
) -> SlideFeatures:
    """``spec``'s tile features: from the cache when there, else computed and cached.

    Raises (``MagnetError``, ``SlideError`` or whatever the slide's library raises) when the slide cannot
    be read, has no pixel size and the recipe gives none, or has no tissue tile: the caller skips it.
    """
    path = cache_path(cache_dir, spec, tiles, encoder.name)
    if path.is_file():
        return load_features(path)
    start = time.perf_counter()
    with open_slide(spec) as slide:
        mpp = _slide_mpp(slide, tiles, spec)
        width, height = slide.dimensions
        thumb = slide.thumbnail(tiles.mask_px)
        um_per_mask_px = mpp * max(width, height) / max(thumb.shape[:2])
        mask = tissue_mask(thumb, um_per_mask_px, min_saturation=tiles.min_saturation,
                           min_region_mm2=tiles.min_region_mm2, max_hole_mm2=tiles.max_hole_mm2)
        side = tiles.size * tiles.um_per_px / mpp
        corners = np.round(tile_grid(mask, (width, height), side, tiles.min_tissue)).astype(np.int64)
        if len(corners) == 0:
            raise MagnetError(f"{spec}: no tile of {tiles.size} px at {tiles.um_per_px:g} um/px has "
                              f"{tiles.min_tissue:g} tissue (tissue mask empty or slide too small)")
        features, decoded = _encode_tiles(slide, corners, side, tiles.size, encoder)
    item = SlideFeatures(spec, features.to(torch.float16), torch.from_numpy(corners), side, (width, height),
                         mpp, tiles.size, tiles.um_per_px, encoder.name, decoded, time.perf_counter() - start)
    save_features(item, path)
    return item


def _slide_mpp(slide: Slide, tiles: TileConfig, spec: str) -> float:
    """Level-0 microns per pixel: the file's (mean of x and y), else the recipe's ``tiles.mpp``."""
    if slide.mpp is not None:
        return (slide.mpp[0] + slide.mpp[1]) / 2
    if tiles.mpp is not None:
        return tiles.mpp
    raise MagnetError(f"{spec}: the file gives no pixel size (um/px); set tiles.mpp in the recipe")


def _encode_tiles(
    slide: Slide, corners: np.ndarray, side: float, size: int, encoder: TileEncoder
) -> tuple[Tensor, int]:
    """Features ``(N, D)`` of the tiles at ``corners`` and the number of pixels decoded to read them."""
    level = slide.get_best_level_for_downsample(side / size)
    region = max(1, math.ceil(side / slide.level_downsamples[level]))
    decoded = 0
    out = []
    for start in range(0, len(corners), encoder.batch_size):
        batch = []
        for x, y in corners[start : start + encoder.batch_size]:
            pixels = slide.read_region((int(x), int(y)), level, (region, region))
            decoded += region * region
            batch.append(np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)))
        out.append(encoder.encode(np.stack(batch)))
    return torch.cat(out), decoded
