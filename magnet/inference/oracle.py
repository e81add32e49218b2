"""Oracle zoom: final ROIs placed by ground truth (a zoom control, ``model.zoom = "oracle"`` [choice, not
the paper]; docs/method.md §8).

Learned zoom is compared with controls in the same run and at the same pixel budget. The oracle is the
upper bound, "is the *what* learnable when the *where* is given?" (docs/method.md §7, §8): layers 1..L-1 run
as the "fixed" control and the N_L final patches are placed here, from the slide's lesion outlines. Per slide:

- N_L square ROIs of side ``oracle_side`` times the slide's longer side (default 1/8, the hit threshold of
  ``magnet.metrics.localisation``). On the canvas (docs/method.md §1: ``u = (X - W0/2, Y - H0/2) / (L/2)``,
  ``L = max(W0, H0)``) a box of side ``f * L`` has half-size exactly ``h = f``.
- Positive slides (lesion polygons known): centres uniform over the lesion area [choice: a polygon drawn with
  probability proportional to its bounding box, a point uniform in that box, kept when inside the polygon,
  which is uniform over the summed lesion areas; so a slide with a macro-metastasis and a few ITCs puts most
  patches on the macro, as a random pick of lesion pixels would].
- Negative slides (no polygons), ``model.oracle_negatives = "lookalikes"`` [choice]: centres uniform over
  the slide's look-alike outlines (benign regions that mimic a lesion, the manifest's ``lookalikes`` file),
  each outline equally likely whatever its area, so small mimics of micro-metastases and ITC get their share
  beside the large reactive centres. These are the hard negatives a zoom that finds lesions also reads, so
  this oracle is the ceiling of telling lesions from their mimics. A negative slide with no look-alike
  falls back to tissue points.
- ``model.oracle_positives = "candidates"`` [choice, with ``oracle_negatives = "lookalikes"``]: the oracle no
  longer knows which spot is the lesion. Every slide's centres go to its lesion-like spots, its lesions and
  look-alikes alike, each outline visited in turn (``outline_tour``: a random order of the outlines, none
  visited twice before all once, a point uniform inside each), negatives' look-alikes the same way. At the
  views where the heads look (8 um/px and coarser) a lesion and its look-alikes differ in the cells only
  (docs/virtual-slides.md), so this is the ceiling of a zoom that finds every candidate there and leaves the
  telling apart to the final patches.
- Negative slides otherwise (``"tissue"``, the default): centres at random tissue points [choice, generic]: a
  low-resolution read of the whole slide (``tissue_grid`` pixels along the longer side) through the slide's
  own ``RegionSource``, with the grey filter's test (paper §4.2, max - min >= 15 of 255) applied to it, so
  glass, background and the canvas outside the slide are excluded whether or not the reader filters; a
  point is a random tissue pixel plus a uniform offset inside it. A slide with no tissue pixel at all falls
  back to points uniform over the slide. The map is cached per slide.
- Augmentation: every read of a slide in a step shares the root's dihedral map D (``magnet.geometry``),
  so an oracle ROI is ``[[h D, c], [0, 0, 1]]``: the reader reads the axis-aligned box ``c +- h`` and
  permutes the pixels by D, exactly like the other layers' reads of that slide.

Random draws come from a ``torch.Generator``; without one, each slide gets its own generator seeded by a
hash of its name, so evaluation places the same patches on a slide whatever the batch it falls in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path as FilePath

import numpy as np
import torch
from matplotlib.path import Path

from magnet.data.manifest import ManifestRow
from magnet.errors import ConfigError
from magnet.geometry import RegionSource, canvas_to_level0, level0_to_canvas
from magnet.inference.draws import slide_generator
from magnet.metrics.localisation import manifest_outlines
from magnet.models.model_config import MagNetConfig
from magnet.slides.pixels import GREY_THRESHOLD, tissue_mask_tensor

__all__ = [
    "OracleZoom", "TissueMap", "outline_tour", "polygon_points", "oracle_rois", "tissue_map", "tissue_mask",
    "tissue_points",
]

# [choice] pixels along the slide's longer side of the tissue map: 128 gives cells of 1/128 of the slide,
# 16 to a default oracle patch side, from one small read at the pyramid's coarse end.
TISSUE_GRID = 128
# Rejection sampling inside lesion polygons: rounds of 4 x count candidates before falling back.
_MAX_ROUNDS = 64


def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> np.ndarray:
    return torch.rand(shape, generator=generator, dtype=torch.float64).numpy()


def _shoelace(shapes: Sequence[np.ndarray]) -> np.ndarray:
    """The areas of polygons ``(K, 2)`` (shoelace formula)."""
    return np.array([0.5 * abs(float(p[:, 0] @ np.roll(p[:, 1], -1) - p[:, 1] @ np.roll(p[:, 0], -1)))
                     for p in shapes])


def polygon_points(
    polygons: Sequence[np.ndarray], count: int, generator: torch.Generator, *, by_area: bool = True
) -> np.ndarray:
    """``count`` level-0 points ``(count, 2)`` inside ``polygons`` (each ``(K >= 3, 2)``): uniform over their
    summed area, or with ``by_area=False`` a polygon drawn with equal odds, then a point uniform inside it.

    A polygon too thin to hit in ``_MAX_ROUNDS`` rounds leaves its vertex mean as the remaining points.
    """
    shapes = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    if not shapes or count < 1:
        return np.zeros((0, 2))
    low = np.stack([p.min(axis=0) for p in shapes])
    high = np.stack([p.max(axis=0) for p in shapes])
    boxes = np.prod(high - low, axis=1)
    # Rejection in a polygon's bounding box keeps a candidate with odds area / box, so a box drawn with
    # weight w yields points at the rate w * area / box: w = box is uniform over the summed area, and
    # w = box / area gives every polygon the same share.
    weights = boxes if by_area else boxes / np.maximum(_shoelace(shapes), 1e-12)
    weights = torch.from_numpy(weights if weights.sum() > 0 else np.ones(len(shapes)))
    paths = [Path(p) for p in shapes]
    found: list[np.ndarray] = []
    have = 0
    for _ in range(_MAX_ROUNDS):
        draws = 4 * count
        which = torch.multinomial(weights, draws, replacement=True, generator=generator).numpy()
        candidates = low[which] + _uniform((draws, 2), generator) * (high[which] - low[which])
        inside = np.zeros(draws, dtype=bool)
        for k in np.unique(which):
            chosen = which == k
            inside[chosen] = paths[k].contains_points(candidates[chosen])
        found.append(candidates[inside])
        have += int(inside.sum())
        if have >= count:
            break
    points = np.concatenate(found)[:count]
    if len(points) < count:  # degenerate outlines: their centre stands in
        fallback = shapes[int(np.argmax(boxes))].mean(axis=0)
        points = np.concatenate([points, np.repeat(fallback[None], count - len(points), axis=0)])
    return points


def outline_tour(polygons: Sequence[np.ndarray], count: int, generator: torch.Generator) -> np.ndarray:
    """``count`` level-0 points ``(count, 2)``, the i-th inside outline ``order[i]``, where ``order`` runs
    through random permutations of the outlines one after another: every outline gets a point before any
    gets two. Inside an outline the point is uniform (``polygon_points``)."""
    if not len(polygons) or count < 1:
        return np.zeros((0, 2))
    rounds = -(-count // len(polygons))
    order = torch.cat([torch.randperm(len(polygons), generator=generator) for _ in range(rounds)])[:count]
    points = np.zeros((count, 2))
    for k in torch.unique(order).tolist():
        at = (order == k).numpy()
        points[at] = polygon_points([polygons[k]], int(at.sum()), generator)
    return points


class TissueMap:
    """Tissue pixels of a slide's low-resolution map: canvas pixel indices and the map's geometry."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, grid: int, slide_size: tuple[int, int]) -> None:
        self.rows, self.cols, self.grid, self.slide_size = rows, cols, grid, slide_size

    @property
    def empty(self) -> bool:
        return len(self.rows) == 0


# The tissue test on what a RegionSource returned: the grey filter's threshold less half a level. The reader's
# images are uint8 / 255, so a spread of exactly GREY_THRESHOLD levels can come out a hair under
# GREY_THRESHOLD / 255 in float32; half a level lower counts it as tissue, as the reader's own uint8 test
# does, and still rejects the next level down (a spread of GREY_THRESHOLD - 1).
READ_TISSUE_THRESHOLD = GREY_THRESHOLD - 0.5


def tissue_mask(images: torch.Tensor) -> torch.Tensor:
    """Tissue pixels of images ``(..., 3, H, W)`` in [0, 1]: those the grey filter keeps (paper §4.2,
    max - min >= 15 of 255; black, glass and off-slide pixels fail it), as a bool ``(..., H, W)``."""
    return tissue_mask_tensor(images.detach().float(), READ_TISSUE_THRESHOLD)


def tissue_map(source: RegionSource, grid: int = TISSUE_GRID) -> TissueMap:
    """The tissue pixels of ``source`` on a ``grid x grid`` read of its whole canvas (root view)."""
    with torch.no_grad():
        view = source.read(torch.eye(3, dtype=torch.float64).unsqueeze(0), grid)[0]
    rows, cols = np.nonzero(tissue_mask(view).cpu().numpy())
    if grid <= np.iinfo(np.uint16).max:  # kept per slide for a whole run: small indices
        rows, cols = rows.astype(np.uint16), cols.astype(np.uint16)
    return TissueMap(rows, cols, grid, tuple(source.slide_size))  # type: ignore[arg-type]


def tissue_points(tissue: TissueMap, count: int, generator: torch.Generator) -> np.ndarray:
    """``count`` level-0 points ``(count, 2)``: random tissue pixels of ``tissue``, uniform inside each,
    clipped to the slide; uniform over the slide when the map has no tissue."""
    width, height = tissue.slide_size
    if tissue.empty:
        return _uniform((count, 2), generator) * np.array([width, height], dtype=np.float64)
    pick = torch.randint(len(tissue.rows), (count,), generator=generator).numpy()
    offset = _uniform((count, 2), generator)
    cells = np.stack([tissue.cols[pick], tissue.rows[pick]], axis=1).astype(np.float64)
    u = 2 * (cells + offset) / tissue.grid - 1  # the map is a read of the whole canvas
    points = canvas_to_level0(u, tissue.slide_size)
    return np.clip(points, 0.0, np.array([width, height], dtype=np.float64))


def oracle_rois(
    points: np.ndarray, slide_size: tuple[int, int], side: float, dihedral: torch.Tensor | None = None
) -> torch.Tensor:
    """Canvas ROIs ``(N, 3, 3)`` float64 of squares of side ``side`` x longer side centred at level-0
    ``points`` ``(N, 2)``; linear part ``side * D``, ``dihedral`` the root's 2x2 map D (default identity)."""
    centre = level0_to_canvas(torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2), slide_size)
    lin = torch.eye(2, dtype=torch.float64) if dihedral is None else dihedral.to(torch.float64)
    rois = torch.zeros(len(centre), 3, 3, dtype=torch.float64)
    rois[:, :2, :2] = side * lin
    rois[:, :2, 2] = centre
    rois[:, 2, 2] = 1.0
    return rois


def _dihedral_of(root: torch.Tensor) -> torch.Tensor:
    """The dihedral map D of a root ROI with linear part ``h0 * D`` (signed permutation times a scale)."""
    lin = root[:2, :2].detach().cpu().to(torch.float64)
    return lin / lin.abs().sum(-1)[0]


class OracleZoom:
    """Builds the oracle's final ROIs for batches of slides (``MagNet.forward(..., final_rois=...)``).

    ``outlines``: lesion polygons (level-0 px) by slide name, as
    ``magnet.metrics.localisation.manifest_outlines``
    returns them; a slide absent or with no polygon is treated as negative. ``side``: the patches' side as a
    fraction of the slide's longer side (``model.oracle_side``). ``lookalikes``: look-alike polygons by slide
    name, where a negative slide's patches go (``model.oracle_negatives="lookalikes"``); None: random tissue
    points. ``candidates``: every slide's patches tour its lesions and look-alikes alike
    (``model.oracle_positives="candidates"``).
    """

    def __init__(
        self,
        outlines: Mapping[str, Sequence[np.ndarray]],
        side: float,
        *,
        lookalikes: Mapping[str, Sequence[np.ndarray]] | None = None,
        candidates: bool = False,
        tissue_grid: int = TISSUE_GRID,
    ) -> None:
        if not 0 < side <= 1:
            raise ValueError(f"side must lie in (0, 1], got {side}")
        if candidates and lookalikes is None:
            raise ValueError("candidates=True tours each slide's lesions and look-alikes: pass lookalikes")
        self.outlines = outlines
        self.lookalikes = lookalikes or {}
        self.candidates = candidates
        self.side = float(side)
        self.tissue_grid = tissue_grid
        self._tissue: dict[str, TissueMap] = {}

    @classmethod
    def for_rows(
        cls,
        outlines: Mapping[str, Sequence[np.ndarray]] | None,
        rows: Sequence[ManifestRow],
        side: float,
        where: str,
        *,
        lookalikes: Mapping[str, Sequence[np.ndarray]] | None = None,
        candidates: bool = False,
    ) -> OracleZoom:
        """The oracle of a run or evaluation over manifest ``rows``; a one-line ``ConfigError`` when the
        manifest (``where``) names no outlines or a positive row has none."""
        if outlines is None:
            raise ConfigError(
                f"{where}: model.zoom=oracle places the final patches on lesion outlines, but the manifest "
                "names none (give it a 'lesions' column naming an outlines file, as magnet synth writes)"
            )
        missing = [r.slide for r in rows if r.label == 1 and not len(outlines.get(r.slide) or [])]
        if missing:
            raise ConfigError(
                f"{where}: model.zoom=oracle needs the lesion outlines of every positive slide; "
                f"{len(missing)} have none (first: {missing[0]})"
            )
        return cls(outlines, side, lookalikes=lookalikes, candidates=candidates)

    @classmethod
    def for_manifest(
        cls,
        model: MagNetConfig,
        rows: Sequence[ManifestRow],
        folder: str | FilePath,
        where: str,
        outlines: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> OracleZoom:
        """The oracle ``model`` asks for over the manifest ``rows`` (files relative to ``folder``): its
        lesion outlines (``outlines`` when already read), and with ``model.oracle_negatives="lookalikes"``
        the look-alike outlines the manifest's ``lookalikes`` column names (one line when it names none)."""
        if outlines is None:
            outlines = manifest_outlines(rows, folder)
        lookalikes = None
        if model.oracle_negatives == "lookalikes":
            lookalikes = manifest_outlines(rows, folder, column="lookalikes")
            if lookalikes is None:
                raise ConfigError(
                    f"{where}: model.oracle_negatives=lookalikes puts negative slides' patches on look-alike "
                    "outlines, but the manifest names none (give it a 'lookalikes' column naming an outlines "
                    "file, as magnet synth writes)"
                )
        candidates = model.oracle_positives == "candidates"
        return cls.for_rows(
            outlines, rows, model.oracle_side, where, lookalikes=lookalikes, candidates=candidates
        )

    def tissue(self, name: str, source: RegionSource) -> TissueMap:
        """The cached tissue map of slide ``name``."""
        if name not in self._tissue:
            self._tissue[name] = tissue_map(source, self.tissue_grid)
        return self._tissue[name]

    def points(self, name: str, source: RegionSource, count: int, generator: torch.Generator) -> np.ndarray:
        """``count`` level-0 centres for slide ``name``: on its lesions when it has any, else on its
        look-alikes when the oracle has them, else on tissue; touring lesions and look-alikes alike where
        the oracle is blind to which is which (``candidates``)."""
        if self.candidates:
            spots = [*(self.outlines.get(name) or []), *(self.lookalikes.get(name) or [])]
            if spots:
                return outline_tour(spots, count, generator)
            return tissue_points(self.tissue(name, source), count, generator)
        polygons = self.outlines.get(name) or []
        if len(polygons):
            return polygon_points(polygons, count, generator)
        mimics = self.lookalikes.get(name) or []
        if len(mimics):
            return polygon_points(mimics, count, generator, by_area=False)
        return tissue_points(self.tissue(name, source), count, generator)

    def rois(
        self,
        slides: Sequence[str],
        sources: Sequence[RegionSource],
        count: int,
        root_rois: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Final ROIs ``(B, count, 3, 3)`` float64 (CPU) for slides ``slides`` read through ``sources``.

        ``root_rois`` ``(B, 3, 3)``: the step's root ROIs, whose dihedral maps the ROIs take (default: none).
        ``generator``: the draws of the whole batch; None seeds one per slide from its name.
        """
        if len(slides) != len(sources):
            raise ValueError(f"{len(slides)} slide names but {len(sources)} sources")
        if root_rois is not None and tuple(root_rois.shape) != (len(slides), 3, 3):
            raise ValueError(f"root_rois must have shape ({len(slides)}, 3, 3), got {tuple(root_rois.shape)}")
        out = []
        for b, (name, source) in enumerate(zip(slides, sources, strict=True)):
            g = generator if generator is not None else slide_generator(name)
            centres = self.points(name, source, count, g)
            dihedral = None if root_rois is None else _dihedral_of(root_rois[b])
            out.append(oracle_rois(centres, tuple(source.slide_size), self.side, dihedral))  # type: ignore[arg-type]
        return torch.stack(out)
