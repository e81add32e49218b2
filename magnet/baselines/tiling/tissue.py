"""Tissue mask from a thumbnail, and the grid of tiles laid over it.

- **Mask.** HSV saturation ``(max - min) / max`` of the thumbnail's pixels, a median filter (JPEG and
  sensor noise), then Otsu's threshold (Otsu 1979, "A threshold selection method from gray-level
  histograms", IEEE Trans. SMC 9(1)): glass and black off-slide pixels have almost no saturation, stained
  tissue a lot, and the histogram is bimodal. The same recipe as CLAM's segmentation (Lu et al. 2021,
  "Data-efficient and weakly supervised computational pathology on whole-slide images", Nature BME) and
  TRIDENT's Otsu mode; written here from the description, not their code. [choice] The threshold never
  goes below ``min_saturation``: on an all-glass slide Otsu would split the noise. Then connected
  pieces of tissue smaller than ``min_region_mm2`` (specks, dust) are removed and holes smaller than
  ``max_hole_mm2`` filled (areas in mm², so the result does not depend on the thumbnail's size).
- **Grid.** Non-overlapping square tiles of ``tile_px`` pixels at ``um_per_px``, i.e. ``tile_px * um_per_px
  / mpp`` level-0 pixels a side, from the slide's top-left corner; a tile is kept when at least
  ``min_tissue`` of it is tissue, measured on ``GRID_SAMPLES²`` points spread evenly over it (works
  whether a tile covers many mask pixels or less than one).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["GRID_SAMPLES", "otsu_threshold", "saturation", "tile_grid", "tissue_mask"]

# Points per tile side where the mask is sampled: 4 x 4 measures tissue share in steps of 1/16.
GRID_SAMPLES = 4
# Median filter size on the thumbnail's saturation (CLAM uses 7 px at its segmentation level).
MEDIAN_PX = 5


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in ``[0, 1]`` of a uint8 RGB image ``(H, W, 3)``; black pixels have 0."""
    pixels = rgb.astype(np.float32)
    top = pixels.max(axis=2)
    spread = top - pixels.min(axis=2)
    return np.divide(spread, top, out=np.zeros_like(top), where=top > 0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` in ``[0, 1]``: maximises the between-class variance of the histogram."""
    hist, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    weights = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)  # pixels at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])  # the upper edge: "above" means tissue


def tissue_mask(
    rgb: np.ndarray,
    um_per_mask_px: float,
    *,
    min_saturation: float = 0.05,
    min_region_mm2: float = 0.05,
    max_hole_mm2: float = 0.02,
) -> np.ndarray:
    """Boolean tissue mask ``(H, W)`` of a thumbnail ``rgb`` whose pixels are ``um_per_mask_px`` wide."""
    sat = ndimage.median_filter(saturation(rgb), size=MEDIAN_PX)
    mask = sat > max(otsu_threshold(sat), min_saturation)
    mm2_per_px = (um_per_mask_px / 1000.0) ** 2
    mask = _drop_small(mask, min_region_mm2 / mm2_per_px)
    holes = ~mask & ndimage.binary_fill_holes(mask)
    small_holes = holes & ~_drop_small(holes, max_hole_mm2 / mm2_per_px)
    return np.asarray(mask | small_holes)


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` without its 8-connected pieces of fewer than ``min_pixels`` pixels."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False  # the background
    return np.asarray(keep[labels])


def tile_grid(
    mask: np.ndarray, slide_size: tuple[int, int], tile_side: float, min_tissue: float
) -> np.ndarray:
    """Top-left corners ``(N, 2)`` (x, y; level-0 pixels, float) of the tiles with enough tissue.

    ``mask`` covers the whole slide of level-0 size ``slide_size`` (width, height); ``tile_side`` is the
    tile's side in level-0 pixels. Only whole tiles inside the slide are laid (the ragged right and bottom
    edges are left out, as tiling pipelines do).
    """
    width, height = slide_size
    cols, rows = math.floor(width / tile_side + 1e-9), math.floor(height / tile_side + 1e-9)
    if cols < 1 or rows < 1:
        return np.zeros((0, 2))
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    corners = np.stack([xs.ravel(), ys.ravel()], axis=1) * tile_side
    offsets = (np.arange(GRID_SAMPLES) + 0.5) / GRID_SAMPLES * tile_side
    ox, oy = np.meshgrid(offsets, offsets)
    points_x = corners[:, :1] + ox.ravel()[None, :]  # (tiles, samples) in level-0 pixels
    points_y = corners[:, 1:] + oy.ravel()[None, :]
    mh, mw = mask.shape
    col = np.clip((points_x * mw / width).astype(np.int64), 0, mw - 1)
    row = np.clip((points_y * mh / height).astype(np.int64), 0, mh - 1)
    share = mask[row, col].mean(axis=1)
    return np.asarray(corners[share >= min_tissue - 1e-9], dtype=np.float64)
