"""The geometry of one virtual slide, drawn from its seed: tissue, lesions, follicles, folds, pen, artefacts.

Sizes are physical (micrometres) and converted with the slide's mpp, so the Camelyon17 rules hold at any
mpp. Lesion classes by largest extent (Camelyon17, Bandi et al. 2019, IEEE TMI 38(2)):
macro-metastasis > 2 mm, micro-metastasis > 0.2 mm and <= 2 mm, isolated tumour cells (ITC) <= 0.2 mm.
Drawn extents stay clear of the thresholds so that rounding never changes a class.

Everything comes from ``numpy.random.default_rng([seed, stream])`` (PCG64, the same bits on every platform),
one stream per part, so that adding a part later does not move the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from magnet.data.lesions import lesion_class_for_extent
from magnet.errors import SlideError
from magnet.synth.shapes import Band, StarShape, make_star
from magnet.synth.uri import SynthSpec

# Extent ranges drawn per class (um): inside the class intervals with a margin of >= 10 %.
EXTENT_RANGE_UM = {"macro": (2300.0, 6000.0), "micro": (260.0, 1700.0), "itc": (40.0, 170.0)}
# A lesion's centre lies at least this many lesion radii inside its section.
LESION_CLEARANCE = 1.35
# Tissue covers 10-40 % of the slide.
TISSUE_FRACTION = (0.10, 0.40)


@dataclass(frozen=True)
class Lesion:
    shape: StarShape
    extent_um: float

    @property
    def lesion_class(self) -> str:
        return lesion_class_for_extent(self.extent_um)


@dataclass(frozen=True)
class PenMark:
    band: Band
    transmission: tuple[float, float, float]  # fraction of light each channel keeps under full ink
    opacity: float


@dataclass
class Layout:
    sections: list[StarShape]
    lesions: list[Lesion]
    follicles: list[StarShape]
    folds: list[Band]
    pens: list[PenMark]
    # Grey scanner artefacts: a linear brightness gradient and periodic stitching stripes along x and y.
    gradient: tuple[float, float] = (0.0, 0.0)
    stripes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _place_sections(spec: SynthSpec, um: float) -> list[StarShape]:
    rng = _rng(spec.seed, 1)
    w, h = spec.size
    fraction = rng.uniform(*TISSUE_FRACTION)
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    shares = np.sort(rng.dirichlet(np.full(n, 2.0)))[::-1]
    if spec.lesion == "macro":  # the largest lesion needs a large, roundish section
        shares = np.concatenate(
            [[max(shares[0], 0.6)], shares[1:] * (1 - max(shares[0], 0.6)) / max(1e-9, 1 - shares[0])]
        )
    sections: list[StarShape] = []
    for i, share in enumerate(shares):
        aspect = rng.uniform(0.8, 0.95) if (i == 0 and spec.lesion == "macro") else rng.uniform(0.5, 0.95)
        radius = np.sqrt(fraction * w * h * share / (np.pi * aspect))
        shape = make_star(rng, 0.0, 0.0, radius, aspect, roughness=0.4, n_vertices=1024, max_harmonic=80)
        limit = 0.47 * min(w, h)
        if i == 0 and spec.lesion != "negative":
            # The main lesion must fit inside the largest section: grow the section if needed (small slides).
            need = LESION_CLEARANCE * EXTENT_RANGE_UM[spec.lesion][0] / 2 / um + 200.0 / um
            if shape.r_min < need:
                shape = shape.scaled(need / shape.r_min)
        # Shrink a section that cannot fit on the slide (small slides): keep a 3 % margin.
        if shape.r_max > limit:
            shape = shape.scaled(limit / shape.r_max)
        r = shape.r_max
        best, best_gap = (w / 2, h / 2), -np.inf
        for _ in range(60):
            cx, cy = rng.uniform(r + 0.03 * w, w - r - 0.03 * w), rng.uniform(r + 0.03 * h, h - r - 0.03 * h)
            gap = min((np.hypot(cx - o.cx, cy - o.cy) - r - o.r_max for o in sections), default=np.inf)
            if gap > best_gap:
                best, best_gap = (cx, cy), gap
            if gap > 0.02 * min(w, h):
                break
        sections.append(StarShape(best[0], best[1], shape.radii))
    return sections


def _inside_point(
    rng: np.random.Generator, section: StarShape, clearance: float, depth_fraction: tuple[float, float]
) -> tuple[float, float] | None:
    """A point whose distance to the section outline (radially) is at least ``clearance``."""
    for _ in range(80):
        angle = rng.uniform(0, 2 * np.pi)
        edge = section.radius_at(angle)
        rho = rng.uniform(*depth_fraction) * edge
        if edge - rho >= clearance:
            return section.cx + rho * np.cos(angle), section.cy + rho * np.sin(angle)
    return None


def _make_lesion(
    rng: np.random.Generator, section: StarShape, extent_um: float, um: float, others: list[Lesion]
) -> Lesion | None:
    target = extent_um / um  # level-0 px
    shape = make_star(rng, 0.0, 0.0, target / 2, rng.uniform(0.6, 0.95), roughness=0.45, max_harmonic=40)
    shape = shape.scaled(target / shape.extent())
    for _ in range(20):
        point = _inside_point(rng, section, 1.1 * shape.r_max + 100.0 / um, (0.0, 0.9))
        if point is None:
            return None
        clear = all(
            np.hypot(point[0] - o.shape.cx, point[1] - o.shape.cy) > shape.r_max + o.shape.r_max
            for o in others
        )
        if clear:
            placed = StarShape(point[0], point[1], shape.radii)
            return Lesion(placed, placed.extent() * um)
    return None


def _place_lesions(spec: SynthSpec, sections: list[StarShape], um: float) -> list[Lesion]:
    if spec.lesion == "negative":
        return []
    rng = _rng(spec.seed, 2)
    lo, hi = EXTENT_RANGE_UM[spec.lesion]
    largest = sections[0]
    # The main lesion must fit inside the largest section with a margin.
    fit_um = 2 * (largest.r_min - 150.0 / um) / LESION_CLEARANCE * um
    if fit_um < lo:
        w, h = spec.size
        raise SlideError(
            spec.uri,
            f"lesion={spec.lesion} needs >= {lo / 1000:g} mm of tissue but a {w * um / 1000:.1f} x "
            f"{h * um / 1000:.1f} mm slide leaves {fit_um / 1000:.2f} mm; use a larger size or mpp",
        )
    extent = float(np.exp(rng.uniform(np.log(lo), np.log(min(hi, fit_um)))))
    main = None
    for _ in range(10):
        main = _make_lesion(rng, largest, extent, um, [])
        if main is not None:
            break
    if main is None:
        raise SlideError(spec.uri, f"could not place a {spec.lesion} lesion in the tissue (seed {spec.seed})")
    lesions = [main]
    # A positive slide may hold further, smaller lesions; its class stays that of the largest.
    for _ in range(int(rng.poisson(0.8))):
        smaller = [c for c in ("micro", "itc") if EXTENT_RANGE_UM[c][0] < extent]
        cls = str(rng.choice(smaller))
        lo2, hi2 = EXTENT_RANGE_UM[cls]
        extra = float(np.exp(rng.uniform(np.log(lo2), np.log(min(hi2, extent)))))
        section = sections[int(rng.integers(len(sections)))]
        lesion = _make_lesion(rng, section, extra, um, lesions)
        if lesion is not None:
            lesions.append(lesion)
    return lesions


def _place_follicles(spec: SynthSpec, sections: list[StarShape], um: float) -> list[StarShape]:
    """Lymphoid follicles: paler, round, in the cortex near the capsule (a low-power distractor)."""
    rng = _rng(spec.seed, 3)
    follicles: list[StarShape] = []
    for section in sections:
        perimeter_mm = 2 * np.pi * float(section.radii.mean()) * um / 1000
        for _ in range(min(int(rng.poisson(0.9 * perimeter_mm)), 24)):
            radius = rng.uniform(120.0, 320.0) / um
            point = _inside_point(rng, section, 1.3 * radius, (0.55, 0.92))
            if point is not None:
                follicles.append(
                    make_star(rng, point[0], point[1], radius, rng.uniform(0.7, 1.0), 0.15, 64, 6)
                )
    return follicles


def _place_folds(spec: SynthSpec, sections: list[StarShape], um: float) -> list[Band]:
    rng = _rng(spec.seed, 4)
    folds: list[Band] = []
    for section in sections:
        if rng.random() < 0.3:
            point = _inside_point(rng, section, 0.0, (0.2, 0.8))
            if point is None:
                continue
            r = float(section.radii.mean())
            folds.append(
                Band(
                    point[0],
                    point[1],
                    rng.uniform(0, np.pi),
                    rng.uniform(0.4, 1.2) * r,
                    rng.uniform(60.0, 250.0) / um,
                    rng.uniform(0.02, 0.1) * r,
                    rng.uniform(0.5, 1.5) * r,
                    rng.uniform(0, 2 * np.pi),
                )
            )
    return folds


_INKS = ((0.35, 0.72, 0.5), (0.4, 0.5, 0.85), (0.3, 0.3, 0.32))  # green, blue, black marker


def _place_pens(spec: SynthSpec, um: float) -> list[PenMark]:
    rng = _rng(spec.seed, 5)
    w, h = spec.size
    pens: list[PenMark] = []
    if rng.random() < 0.35:
        ink = _INKS[int(rng.integers(len(_INKS)))]
        for _ in range(int(rng.integers(1, 4))):
            length = rng.uniform(0.1, 0.5) * min(w, h)
            band = Band(
                rng.uniform(0.1, 0.9) * w,
                rng.uniform(0.1, 0.9) * h,
                rng.uniform(0, np.pi),
                length,
                rng.uniform(150.0, 600.0) / um,
                rng.uniform(0.0, 0.1) * length,
                rng.uniform(0.5, 2.0) * length,
                rng.uniform(0, 2 * np.pi),
            )
            pens.append(PenMark(band, ink, rng.uniform(0.55, 0.9)))
    return pens


def make_layout(spec: SynthSpec) -> Layout:
    """Draw the whole geometry of the slide ``spec`` (no pixels)."""
    um = spec.mpp
    sections = _place_sections(spec, um)
    layout = Layout(
        sections=sections,
        lesions=_place_lesions(spec, sections, um),
        follicles=_place_follicles(spec, sections, um),
        folds=_place_folds(spec, sections, um),
        pens=_place_pens(spec, um),
    )
    rng = _rng(spec.seed, 6)
    layout.gradient = (rng.uniform(-8, 8), rng.uniform(-8, 8))  # grey levels across the slide
    for axis in ("x", "y"):
        if rng.random() < 0.6:
            # (period, phase, width, darkness): stitching stripes of a line-scan / tile scanner.
            period = rng.uniform(1000.0, 3000.0) / um
            layout.stripes[axis] = (
                period,
                rng.uniform(0, period),
                rng.uniform(4.0, 20.0) / um,
                rng.uniform(2, 8),
            )
    return layout
