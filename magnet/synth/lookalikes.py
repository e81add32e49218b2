"""Benign look-alikes of metastases (version 2): what fools a low-power view of a lymph node.

At low power a metastasis is a pale, slightly pink patch in the node; so are a germinal centre, a cluster of
sinus histiocytes and a few large benign cells (normal node histology, e.g. Young et al., Wheater's Functional
Histology), which cells tell apart. Each look-alike here is drawn with a size distribution that overlaps one
lesion class (``mimics``) and coloured so that its mean colour equals the carcinoma's (node_colours.py):
they differ only in the cells, i.e. only at high magnification.

Kinds and sizes (largest extent, um):
- ``germinal_centre``: of a lymphoid follicle, 220-1700 (mimics micro; natural germinal centres 100-600 um,
  reactive ones larger), and per slide one confluent reactive germinal centre of 2300-4000 (mimics macro)
  where the largest node has room;
- ``histiocyte_cluster``: in the subcapsular or medullary sinuses, 260-800 (micro) and 40-170 (ITC);
- ``large_cells``: a few large benign cells in the paracortex, 40-170 (ITC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magnet.data.lesions import lesion_class_for_extent
from magnet.synth.shapes import StarShape, make_star

VERTICES = 128  # outline vertices: sub-pixel smooth at level 0 for these sizes, and a cheap extent
KINDS = ("germinal_centre", "histiocyte_cluster", "large_cells")
# Extent ranges (um) drawn per (kind, class mimicked); each inside the Camelyon17 class interval.
EXTENT_RANGE_UM = {
    ("germinal_centre", "macro"): (2300.0, 4000.0),
    ("germinal_centre", "micro"): (220.0, 1700.0),
    ("histiocyte_cluster", "micro"): (260.0, 800.0),
    ("histiocyte_cluster", "itc"): (40.0, 170.0),
    ("large_cells", "itc"): (40.0, 170.0),
}


@dataclass(frozen=True)
class Lookalike:
    """One benign look-alike: its kind, outline, largest extent and the lesion class its size matches."""

    kind: str
    shape: StarShape
    extent_um: float

    @property
    def polygon(self) -> np.ndarray:
        """Outline as a ``(K, 2)`` float64 array of level-0 ``(x, y)``, like ``VirtualSlide.lesions``."""
        return self.shape.polygon()

    @property
    def mimics(self) -> str:
        """The lesion class whose size range the look-alike's extent falls in (Camelyon17 rules)."""
        return lesion_class_for_extent(self.extent_um)


def draw_extent(rng: np.random.Generator, kind: str, mimics: str) -> float:
    """An extent (um), log-uniform in the range of ``(kind, mimics)``."""
    lo, hi = EXTENT_RANGE_UM[(kind, mimics)]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def blob(rng: np.random.Generator, extent_px: float, roughness: float = 0.3) -> StarShape:
    """A roundish irregular outline at the origin whose largest extent is exactly ``extent_px``."""
    shape = make_star(rng, 0.0, 0.0, extent_px / 2, rng.uniform(0.65, 0.95), roughness, VERTICES, 24)
    return shape.scaled(extent_px / shape.extent())


def clear_of(cx: float, cy: float, r: float, others: list[tuple[float, float, float]], margin: float) -> bool:
    """Whether a disc of radius ``r`` at ``(cx, cy)`` keeps ``margin`` from every disc ``(x, y, radius)`` of
    ``others`` (each shape's circumscribed circle)."""
    if not others:
        return True
    discs = np.asarray(others)
    return bool((np.hypot(cx - discs[:, 0], cy - discs[:, 1]) > r + discs[:, 2] + margin).all())
