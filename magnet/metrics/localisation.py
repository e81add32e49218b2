"""Localisation metrics: do a MagNet's final patches land on the lesions? (docs/method.md §5, §7)

Per slide, from the level-0 boxes of the final patches (``MagNetOutput.boxes_level0[-1][b]``), the slide's
level-0 size and its lesion polygons (level-0 pixels, as ``magnet.data.lesions.read_lesions`` returns them):

- ``hit``: some final patch whose side is at most ``max_patch_fraction`` (1/8 [choice]) of the slide's
  longer side overlaps a lesion polygon. The size cap matters: a patch as large as the slide "overlaps"
  every lesion (docs/method.md §7: a hit means nothing without the patch size). The overlap test is exact
  (matplotlib's box-path intersection, filled polygons, so a box inside a lesion counts).
- ``fine_hit``: the same with a cap in level-0 pixels (``fine_side``), for a hit *at cellular resolution*:
  the caller sets the cap, per box, to the side whose pixels of detail are ``FINE_UM_PER_PX`` each (2 um
  [choice]: where the resolution curve of docs/BENCHMARKS.md tells micro-metastases from their
  look-alikes): for a patch read at its box, ``final_size`` pixels; for one the sampler draws from a
  coarser read, fewer (``magnet.models.recentre.final_detail_px``; before 2026-12-06 the cap counted
  ``final_size`` pixels for every patch); None when the slide's pixel size is unknown.
- ``lesion_share``: the share of the final patches' summed area that lies inside lesions. [choice] Areas
  are summed per patch, overlapping patches counted as often as they are read, so it is the share of the
  classifier's input pixels that show lesion; the parts of a box off the slide count as non-lesion.
  Lesions are rasterised on a grid of ``grid_cells`` cells along the slide's longer side (a cell is inside
  when its centre is, even-odd rule, by a numpy scanline fill), and box areas are integrated over that
  mask exactly (bilinear interpolation of its summed-area table, so boxes smaller than a cell count too).
- ``mean_patch_side`` in level-0 pixels and as a fraction of the longer side; ``eligible_share``, the share
  of final patches small enough to count for a hit.

``localisation_summary`` averages these per Table-1 column (``magnet.metrics.TABLE1_COLUMNS``: macro,
micro, itc, macro & micro, all positives). Hit rates are over positive slides with known lesion outlines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath

import numpy as np
import torch
from matplotlib.path import Path
from matplotlib.transforms import Bbox

from magnet.data.lesions import UNKNOWN_POSITIVE, read_lesions
from magnet.data.manifest import ManifestRow
from magnet.errors import MagnetError
from magnet.geometry import box_sides, canvas_side
from magnet.metrics.auroc import TABLE1_COLUMNS

__all__ = [
    "LesionAreas", "SlideLocalisation", "lesion_mask", "localisation_summary", "manifest_outlines",
    "slide_localisation",
]

# [choice] a final patch counts for a hit when its side is at most 1/8 of the slide's longer side: the side
# a 3-layer MagNet reaches when every layer halves its parent (docs/method.md §5).
MAX_PATCH_FRACTION = 1 / 8
# [choice] cells along the longer side for the lesion share: 1024 gives ~100 px cells on 100k-px slides,
# about 8 cells across the smallest (200 um) lesions at 0.25 um/px, at ~1 ms per slide.
GRID_CELLS = 1024
# [choice] cellular resolution for ``fine_hit``: a final patch read at <= 2 um per output pixel.
FINE_UM_PER_PX = 2.0


@dataclass(frozen=True)
class SlideLocalisation:
    """Localisation of one slide's final patches."""

    hit: bool  # a patch of side <= max_patch_fraction * longer side overlaps a lesion
    lesion_share: float  # share of the final patches' summed area inside lesions, in [0, 1]
    mean_patch_side: float  # level-0 pixels
    mean_patch_side_fraction: float  # of the slide's longer side
    eligible_share: float  # share of final patches small enough to count for a hit
    n_lesions: int
    fine_hit: bool | None = None  # a patch of side <= fine_side overlaps a lesion; None: no fine_side given


def slide_localisation(
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    slide_size: tuple[int, int],
    lesions: Sequence[np.ndarray],
    *,
    max_patch_fraction: float = MAX_PATCH_FRACTION,
    grid_cells: int = GRID_CELLS,
    fine_side: float | np.ndarray | None = None,
) -> SlideLocalisation:
    """Localisation of final patches ``boxes`` ``(N, 4)`` (level-0 x0, y0, x1, y1) on one slide.

    ``slide_size`` is the level-0 ``(width, height)``; ``lesions`` the polygons ``(K, 2)`` (x, y) in level-0
    pixels (none for a negative slide). ``boxes`` may be a tensor on any device. ``fine_side``: the largest
    patch side (level-0 pixels) that counts for ``fine_hit``, one for every box or ``(N,)``, one per box
    (a patch's cap follows the detail it holds, ``magnet.models.recentre.final_detail_px``).
    """
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = slide_size
    if width < 1 or height < 1:
        raise ValueError(f"slide_size must be positive, got {slide_size}")
    if grid_cells < 1:
        raise ValueError(f"grid_cells must be >= 1, got {grid_cells}")
    polygons = [_as_polygon(p, i) for i, p in enumerate(lesions)]
    longer = float(canvas_side(slide_size))  # the canvas side L: a box of side f * L has half-size f
    sides = box_sides(box)
    # The relative slack absorbs float rounding, so a patch of side exactly max_patch_fraction (the oracle
    # zoom's default, magnet.inference.oracle) counts.
    eligible = sides <= max_patch_fraction * longer * (1 + 1e-9)
    paths = [Path(np.vstack([p, p[:1]]), closed=True) for p in polygons]
    fine_hit = None if fine_side is None else _any_overlap(box[sides <= fine_side * (1 + 1e-9)], paths)
    mean_side = float(sides.mean()) if len(sides) else 0.0
    return SlideLocalisation(
        hit=_any_overlap(box[eligible], paths),
        lesion_share=LesionAreas(polygons, (width, height), grid_cells).share(box),
        mean_patch_side=mean_side,
        mean_patch_side_fraction=mean_side / longer,
        eligible_share=float(eligible.mean()) if len(sides) else 0.0,
        n_lesions=len(polygons),
        fine_hit=fine_hit,
    )


def _any_overlap(boxes: np.ndarray, paths: Sequence[Path]) -> bool:
    """Whether some box ``(x0, y0, x1, y1)`` overlaps some filled lesion outline."""
    return any(path.intersects_bbox(Bbox.from_extents(*b), filled=True) for b in boxes for path in paths)


def _as_polygon(polygon: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(polygon, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 3:
        raise ValueError(f"lesion {index}: a polygon needs (K >= 3, 2) vertices, got shape {array.shape}")
    return array


def lesion_mask(
    polygons: Sequence[np.ndarray], slide_size: tuple[int, int], grid_cells: int = GRID_CELLS
) -> tuple[np.ndarray, float]:
    """Boolean mask ``(H_g, W_g)`` of the lesions on the slide's grid, and the cell side in level-0 px.

    A cell is inside when its centre is inside a polygon (even-odd rule per polygon, union over polygons).
    """
    cell, rows, cols = _grid(slide_size, grid_cells)
    return _rasterise(polygons, cell, (0, rows, 0, cols)), cell


def _grid(slide_size: tuple[int, int], grid_cells: int) -> tuple[float, int, int]:
    width, height = slide_size
    cell = canvas_side(slide_size) / grid_cells
    return cell, math.ceil(height / cell - 1e-9), math.ceil(width / cell - 1e-9)


def _rasterise(polygons: Sequence[np.ndarray], cell: float, window: tuple[int, int, int, int]) -> np.ndarray:
    """Mask of grid rows r0..r1-1 and columns c0..c1-1 (``window``), by a scanline fill of cell centres."""
    r0, r1, c0, c1 = window
    # Difference array: +1 where a run of inside cells starts, -1 after it ends; cumsum > 0 is the union.
    diff = np.zeros((r1 - r0, c1 - c0 + 1), dtype=np.int32)
    for polygon in polygons:
        vertices = np.asarray(polygon, dtype=np.float64) / cell  # grid units; cell centres at j + 0.5
        x0, y0 = vertices[:, 0], vertices[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        first = max(r0, math.floor(y0.min() - 0.5))
        last = min(r1 - 1, math.ceil(y0.max() - 0.5))
        if last < first:
            continue
        yc = np.arange(first, last + 1, dtype=np.float64)[:, None] + 0.5  # (R, 1) row centres
        crosses = (y0 <= yc) != (y1 <= yc)  # half-open rule: each crossing counted once
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = np.where(crosses, x0 + (yc - y0) * (x1 - x0) / (y1 - y0), np.inf)
        xs.sort(axis=1)  # crossings first, pairs (in, out) by the even-odd rule; inf pads the rest
        pairs = xs.shape[1] // 2
        starts, ends = xs[:, 0 : 2 * pairs : 2], xs[:, 1 : 2 * pairs : 2]
        valid = np.isfinite(ends)
        row_index = np.broadcast_to(np.arange(first - r0, last + 1 - r0)[:, None], starts.shape)[valid]
        # Cells j with centre j + 0.5 in [start, end): j from ceil(start - 0.5) to ceil(end - 0.5) - 1.
        begin = np.clip(np.ceil(starts[valid] - 0.5) - c0, 0, c1 - c0).astype(np.int64)
        stop = np.clip(np.ceil(ends[valid] - 0.5) - c0, 0, c1 - c0).astype(np.int64)
        np.add.at(diff, (row_index, begin), 1)
        np.add.at(diff, (row_index, stop), -1)
    return np.cumsum(diff, axis=1)[:, : c1 - c0] > 0


class LesionAreas:
    """Lesion area inside level-0 boxes on one slide, from its lesion mask rasterised once (reusable).

    Built per slide (``polygons`` in level-0 pixels, ``slide_size`` its level-0 ``(width, height)``), then
    ``inside(boxes)`` / ``share(boxes)`` for any number of box sets: training diagnostics cache one per slide.
    Only the lesions' bounding window is rasterised (the mask is 0 elsewhere); box areas are integrated over
    it exactly (bilinear interpolation of its summed-area table, so boxes smaller than a cell count too).
    """

    def __init__(
        self, polygons: Sequence[np.ndarray], slide_size: tuple[int, int], grid_cells: int = GRID_CELLS
    ) -> None:
        self.polygons = [_as_polygon(p, i) for i, p in enumerate(polygons)]
        self.cell, rows, cols = _grid(slide_size, grid_cells)
        self.table: np.ndarray | None = None  # None: no lesion on the slide
        self.origin = np.zeros(4)
        if not self.polygons:
            return
        low = np.min([p.min(axis=0) for p in self.polygons], axis=0) / self.cell
        high = np.max([p.max(axis=0) for p in self.polygons], axis=0) / self.cell
        c0, r0 = (max(0, math.floor(v)) for v in low)
        c1, r1 = min(cols, math.ceil(high[0]) + 1), min(rows, math.ceil(high[1]) + 1)
        if r1 <= r0 or c1 <= c0:
            return  # lesions off the slide
        table = np.zeros((r1 - r0 + 1, c1 - c0 + 1))
        table[1:, 1:] = _rasterise(self.polygons, self.cell, (r0, r1, c0, c1)).cumsum(0).cumsum(1)
        self.table = table
        self.origin = np.array([c0, r0, c0, r0], dtype=np.float64)

    def inside(self, boxes: np.ndarray) -> np.ndarray:
        """Lesion area (level-0 px^2) inside each box ``(N, 4)`` (x0, y0, x1, y1)."""
        box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.table is None:
            return np.zeros(len(box))
        grid = box / self.cell - self.origin  # the window's grid units
        table = self.table
        cells = (
            _integral(table, grid[:, 2], grid[:, 3])
            - _integral(table, grid[:, 0], grid[:, 3])
            - _integral(table, grid[:, 2], grid[:, 1])
            + _integral(table, grid[:, 0], grid[:, 1])
        )
        return cells * self.cell * self.cell

    def share(self, boxes: np.ndarray) -> float:
        """Share of the boxes' summed area inside lesions, in [0, 1] (0 for no boxes or no lesions)."""
        box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        areas = np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None)
        total = float(areas.sum())
        if self.table is None or total <= 0:
            return 0.0
        return float(np.clip(self.inside(box).sum() / total, 0.0, 1.0))


def _integral(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask area over [0, x] x [0, y] (window grid units): bilinear interpolation of the summed-area table,
    exact for a mask constant on each cell; points outside the window clamp to its edge."""
    rows, cols = table.shape[0] - 1, table.shape[1] - 1
    x = np.clip(x, 0, cols)
    y = np.clip(y, 0, rows)
    j = np.minimum(np.floor(x).astype(np.int64), max(cols - 1, 0))
    i = np.minimum(np.floor(y).astype(np.int64), max(rows - 1, 0))
    fx, fy = x - j, y - i
    return (
        table[i, j] * (1 - fx) * (1 - fy)
        + table[i, j + 1] * fx * (1 - fy)
        + table[i + 1, j] * (1 - fx) * fy
        + table[i + 1, j + 1] * fx * fy
    )


def localisation_summary(
    per_slide: Sequence[SlideLocalisation], classes: Sequence[str | None]
) -> dict[str, float | int | None]:
    """Aggregate per-slide localisation; JSON-ready, flat keys (CSV / TensorBoard friendly).

    ``classes`` are the slides' lesion classes (``negative``, ``macro``, ``micro``, ``itc``, or ``None`` /
    ``positive`` for a positive of unknown class, as in ``magnet.metrics.table1``). For each Table-1 column
    ``c`` (macro, micro, itc, macro_micro, all): ``hit_rate_c`` and ``lesion_share_c`` (means over that
    column's positive slides with known lesions; None when there are none), ``hit_rate_fine_c`` (the same
    for ``fine_hit``, over the slides that have one) and ``n_c``. Over every slide:
    ``mean_patch_side``, ``mean_patch_side_fraction``, ``eligible_share``, and ``n_slides``.
    """
    if len(per_slide) != len(classes):
        raise ValueError(f"{len(per_slide)} slides but {len(classes)} classes")
    names = np.array([(c or UNKNOWN_POSITIVE).lower() for c in classes], dtype=object)
    known = np.array([s.n_lesions > 0 for s in per_slide], dtype=bool)
    hits = np.array([s.hit for s in per_slide], dtype=np.float64)
    fine_known = np.array([s.fine_hit is not None for s in per_slide], dtype=bool)
    fine_hits = np.array([bool(s.fine_hit) for s in per_slide], dtype=np.float64)
    shares = np.array([s.lesion_share for s in per_slide], dtype=np.float64)
    result: dict[str, float | int | None] = {}
    for key, _title, members in TABLE1_COLUMNS:
        positive = names != "negative" if members is None else np.isin(names, members)
        chosen = positive & known
        count = int(chosen.sum())
        result[f"hit_rate_{key}"] = float(hits[chosen].mean()) if count else None
        result[f"lesion_share_{key}"] = float(shares[chosen].mean()) if count else None
        fine = chosen & fine_known
        result[f"hit_rate_fine_{key}"] = float(fine_hits[fine].mean()) if fine.any() else None
        result[f"n_{key}"] = count
    for field in ("mean_patch_side", "mean_patch_side_fraction", "eligible_share"):
        values = [float(getattr(s, field)) for s in per_slide]
        result[field] = float(np.mean(values)) if values else None
    result["n_slides"] = len(per_slide)
    return result


def manifest_outlines(
    rows: Sequence[ManifestRow], folder: str | FilePath, column: str = "lesions"
) -> dict[str, list[np.ndarray]] | None:
    """Polygons (level-0 px) by slide, from the outline files the manifest's ``column`` names: ``lesions``
    (the default) or ``lookalikes`` (benign mimics, ``magnet.data.lesions``).

    Paths are relative to ``folder`` (the manifest's folder); ``magnet synth dataset`` writes
    ``lesions.json`` and ``lookalikes.json`` (``magnet.data.lesions.read_lesions`` reads both). None when no
    row names a file, so "no outlines known" differs from "known, and this slide has none" (a negative:
    ``[]`` or absent).
    """
    files = sorted({r.extra.get(column, "") for r in rows} - {""})
    if not files:
        return None
    what = "lesion" if column == "lesions" else column
    outlines: dict[str, list[np.ndarray]] = {}
    for name in files:
        path = FilePath(folder) / name
        if not path.is_file():
            raise MagnetError(f"{path}: {what} outlines file named by the manifest is missing")
        try:
            outlines.update(read_lesions(path))
        except (ValueError, KeyError, TypeError) as exc:
            raise MagnetError(f"{path}: not a {what} outlines file ({type(exc).__name__}: {exc})") from None
    return outlines
