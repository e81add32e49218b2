"""Lymph-node anatomy of versions 2 and 3: the geometry of each section, from the slide's seed (no pixels).

Version 2 keeps version 1's sections, lesion shapes and sizes, folds, pen marks and scanner artefacts
(layout.py: the same random streams give the same ones), moves most lesions up to micro size into the outer
node (``LESION_SITES``) and makes each section a lymph node (standard histology, e.g. Young et al., Wheater's
Functional Histology, "Lymph nodes"):

- a fibrous **capsule** (rendered as in version 1) over a **subcapsular sinus** (``SINUS_UM`` wide);
- the **cortex** under it with lymphoid **follicles**: a dense dark mantle around a paler germinal centre
  (follicles 0.3-2.7 mm, germinal centres 0.22-1.7 mm log-uniform, half under 0.6 mm; the germinal
  centres are listed as look-alikes);
- the **paracortex** (the rest of the node: dense small lymphocytes, the version-1 parenchyma), where most
  lesions larger than ITC sit in a dense lymphoid rim like a follicle's mantle;
- the **medulla** toward the hilum: cords and sinuses (a lobed region of about 0.45 node radii);
- the **hilum** at the edge: fat with a few vessels, and **perinodal fat** lobules hugging the capsule.

Sections are 1-3 per slide as in version 1, 2-20 mm across on the default slide. Look-alikes
(lookalikes.py) are placed here too, clear of the lesions and of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from magnet.synth.layout import Layout, Lesion, make_layout
from magnet.synth.lookalikes import Lookalike, blob, clear_of, draw_extent
from magnet.synth.render import CAPSULE_UM
from magnet.synth.shapes import StarShape, make_star
from magnet.synth.uri import SynthSpec

SINUS_UM = 40.0  # subcapsular sinus width under the capsule
MANTLE_SCALE = (1.3, 1.6)  # follicle (mantle) extent / germinal-centre extent
FOLLICLES_PER_MM = 0.8  # follicles per mm of node perimeter (capped per node)
MAX_FOLLICLES = 30
MARGIN_UM = 40.0  # look-alikes keep this much tissue from lesions and from each other
# Random streams (layout.py uses 1-8): one per part, so adding a part never moves the others.
_STREAMS = {
    "node": 20,
    "follicles": 21,
    "reactive": 22,
    "histiocytes": 23,
    "large_cells": 24,
    "fat": 25,
    "rims": 26,
    "sites": 27,
}
# A metastasis pushes the lymphocytes around it into a dense rim, as a mantle surrounds a germinal centre:
# every lesion larger than ITC gets one, as wide as a mantle (rim radius / lesion radius), so a dark ring is
# no clue at low power. (0.8 and 1.2-1.5 left a rimless fifth that a CNN found at 32 um/px: micro AUROC 0.67.)
LESION_RIM = (1.0, MANTLE_SCALE)  # (probability, scale range)
# Lesions up to this extent (um) move to the outer node, where the follicles are, with this probability
# (when there is room): metastases arrive through the subcapsular sinus; position is then no clue either.
LESION_SITES = (2000.0, 1.0)


@dataclass(frozen=True)
class Node:
    outline: StarShape  # the section (its rim is the capsule)
    medulla: StarShape
    hilum: StarShape  # hilar fat, centred on the outline
    vessels: list[StarShape]


@dataclass
class NodeLayout(Layout):
    nodes: list[Node] = field(default_factory=list)
    mantles: list[StarShape] = field(default_factory=list)  # follicles' outer outlines
    fat: list[StarShape] = field(default_factory=list)  # perinodal fat lobules
    lookalikes: list[Lookalike] = field(default_factory=list)

    @property
    def hila(self) -> list[StarShape]:
        return [node.hilum for node in self.nodes]

    @property
    def medullae(self) -> list[StarShape]:
        return [node.medulla for node in self.nodes]

    @property
    def vessels(self) -> list[StarShape]:
        return [v for node in self.nodes for v in node.vessels]

    def of_kind(self, kind: str) -> list[StarShape]:
        return [item.shape for item in self.lookalikes if item.kind == kind]


def _rng(seed: int, part: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[part]])


def _polar(section: StarShape, angle: float, fraction: float) -> tuple[float, float]:
    rho = fraction * section.radius_at(angle)
    return section.cx + rho * np.cos(angle), section.cy + rho * np.sin(angle)


def _angle_gap(a: float, b: float) -> float:
    return float(abs((a - b + np.pi) % (2 * np.pi) - np.pi))


def _make_node(rng: np.random.Generator, section: StarShape, um: float) -> tuple[Node, float]:
    """The node's medulla, hilum and hilar vessels; also the hilum's direction (radians)."""
    hilum_angle = rng.uniform(0, 2 * np.pi)
    r = float(section.radii.mean())
    mx, my = _polar(section, hilum_angle, 0.35)
    medulla = make_star(rng, mx, my, 0.45 * section.r_min, rng.uniform(0.6, 0.9), 0.5, 256, 16)
    hx, hy = _polar(section, hilum_angle, 1.0)
    hilum = make_star(rng, hx, hy, rng.uniform(0.12, 0.2) * r, rng.uniform(0.6, 0.9), 0.3, 256, 12)
    vessels = []
    for _ in range(int(rng.integers(2, 5))):
        a, f = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.6)
        vx, vy = hilum.cx + f * hilum.r_min * np.cos(a), hilum.cy + f * hilum.r_min * np.sin(a)
        vessels.append(
            make_star(rng, vx, vy, rng.uniform(40.0, 150.0) / um, rng.uniform(0.5, 0.9), 0.1, 64, 6)
        )
    return Node(section, medulla, hilum, vessels), hilum_angle


def _perinodal_fat(rng: np.random.Generator, section: StarShape, hilum_angle: float) -> list[StarShape]:
    """Fat lobules on the outside of the capsule, mostly around the hilum."""
    lobes = []
    r = float(section.radii.mean())
    for _ in range(int(rng.integers(2, 6))):
        a = hilum_angle + rng.normal(0, 0.8)
        x, y = _polar(section, a, rng.uniform(1.02, 1.12))
        lobes.append(make_star(rng, x, y, rng.uniform(0.08, 0.22) * r, rng.uniform(0.5, 0.9), 0.35, 256, 16))
    return lobes


def _place(
    rng: np.random.Generator,
    section: StarShape,
    shape: StarShape,
    fractions: tuple[float, float],
    edge_clearance: float,
    avoid: list[tuple[float, float, float]],
    margin: float,
    inside: StarShape | None = None,
    hilum_angle: float | None = None,
) -> StarShape | None:
    """``shape`` moved to a point of ``section`` at a radial fraction in ``fractions`` that keeps
    ``edge_clearance`` from the outline, ``margin`` from ``avoid``, lies inside ``inside`` if given, and
    away from the hilum side if given; None after 40 tries."""
    r = shape.r_max
    for _ in range(40):
        angle = rng.uniform(0, 2 * np.pi)
        if hilum_angle is not None and _angle_gap(angle, hilum_angle) < 0.9:
            continue
        edge = section.radius_at(angle)
        rho = rng.uniform(*fractions) * edge
        if edge - rho < r + edge_clearance:
            continue
        x, y = section.cx + rho * np.cos(angle), section.cy + rho * np.sin(angle)
        if inside is not None:
            a_in = float(np.arctan2(y - inside.cy, x - inside.cx))
            if np.hypot(x - inside.cx, y - inside.cy) + r > inside.radius_at(a_in):
                continue
        if clear_of(x, y, r, avoid, margin):
            return StarShape(x, y, shape.radii)
    return None


def make_node_layout(spec: SynthSpec) -> NodeLayout:
    """Draw the whole version-2 geometry of slide ``spec`` (no pixels).

    Version 2 places the lesions first and the look-alikes clear of them, so a lesion can crowd out a
    look-alike; above all the large reactive germinal centre, which then stands on fewer positive slides than
    negative ones (a slide-level clue; version 3 below, docs/virtual-slides.md).
    """
    layout, hilum_angles = _nodes(spec)
    taken: list[tuple[float, float, float]] = []
    _move_lesions_to_cortex(spec, layout, taken)
    _place_lookalikes(spec, layout, taken, hilum_angles)
    return layout


def make_node_layout_v3(spec: SynthSpec) -> NodeLayout:
    """Draw the whole version-3 geometry of slide ``spec``: version 2 with the look-alikes placed blind to the
    lesions, then the lesions moved clear of them.

    Everything but the lesions and their lymphoid rims is then what the negative slide of the same seed has
    (for micro and ITC slides; a macro slide's largest section is drawn rounder and larger, as in version 1),
    so nothing outside a lesion tells a small-lesion slide from a negative one.
    """
    layout, hilum_angles = _nodes(spec)
    taken: list[tuple[float, float, float]] = []
    _place_lookalikes(spec, layout, taken, hilum_angles)
    _move_lesions_to_cortex(spec, layout, taken)
    return layout


def _nodes(spec: SynthSpec) -> tuple[NodeLayout, list[float]]:
    """Version 1's geometry with each section made a node (medulla, hilum, vessels, perinodal fat)."""
    um = spec.mpp
    base = make_layout(spec)
    layout = NodeLayout(
        sections=base.sections,
        lesions=list(base.lesions),
        follicles=[],
        folds=base.folds,
        pens=base.pens,
        gradient=base.gradient,
        stripes=base.stripes,
    )
    node_rng, fat_rng = _rng(spec.seed, "node"), _rng(spec.seed, "fat")
    hilum_angles = []
    for section in layout.sections:
        node, hilum_angle = _make_node(node_rng, section, um)
        layout.nodes.append(node)
        layout.fat.extend(_perinodal_fat(fat_rng, section, hilum_angle))
        hilum_angles.append(hilum_angle)
    return layout, hilum_angles


def _cortex_edge(um: float) -> float:
    return (CAPSULE_UM + SINUS_UM + 30.0) / um  # capsule + sinus + a few cells


def _move_lesions_to_cortex(
    spec: SynthSpec, layout: NodeLayout, taken: list[tuple[float, float, float]]
) -> None:
    """Move most lesions up to micro size into the outer node, clear of ``taken``, and give every lesion
    larger than ITC its lymphoid rim; the lesions' circles are appended to ``taken``.

    ``taken`` holds the circumscribed circles (x, y, radius) of what is already placed. A lesion that finds
    no room stays where version 1 put it (in version 3 it may then overlap a look-alike, drawn over it).
    """
    um = spec.mpp
    first = len(taken)
    taken.extend((s.cx, s.cy, s.r_max) for s in (lesion.shape for lesion in layout.lesions))
    # Metastases arrive through the afferent lymphatics into the subcapsular sinus and grow into the cortex:
    # most lesions up to micro size move to the outer node, where the follicles are, so that position in the
    # node is no clue at low power. Same shapes and sizes as version 1, so the same classes.
    rng = _rng(spec.seed, "sites")
    for index, lesion in enumerate(layout.lesions):
        if lesion.extent_um > LESION_SITES[0] or rng.random() >= LESION_SITES[1]:
            continue
        section = min(layout.sections, key=lambda s: np.hypot(s.cx - lesion.shape.cx, s.cy - lesion.shape.cy))
        others = [t for i, t in enumerate(taken) if i != first + index]
        placed = _place(rng, section, lesion.shape, (0.5, 0.95), _cortex_edge(um), others, MARGIN_UM / um)
        if placed is not None:
            layout.lesions[index] = Lesion(placed, lesion.extent_um)
            taken[first + index] = (placed.cx, placed.cy, placed.r_max)
    rng = _rng(spec.seed, "rims")
    for lesion in layout.lesions:
        draw, scale = rng.random(), rng.uniform(*LESION_RIM[1])
        if lesion.extent_um > 200.0 and draw < LESION_RIM[0]:
            layout.mantles.append(lesion.shape.scaled(scale))


def _place_lookalikes(
    spec: SynthSpec, layout: NodeLayout, taken: list[tuple[float, float, float]], hilum_angles: list[float]
) -> None:
    """The reactive germinal centre, the follicles, sinus histiocytes and large cells, each clear of
    ``taken`` (circumscribed circles of what is already placed), to which they are appended."""
    um = spec.mpp
    margin = MARGIN_UM / um
    cortex_edge = _cortex_edge(um)

    def add(kind: str, shape: StarShape, extent_px: float) -> None:  # extent: blob() made it exact
        layout.lookalikes.append(Lookalike(kind, shape, extent_px * um))
        taken.append((shape.cx, shape.cy, shape.r_max))

    # One confluent reactive germinal centre of macro size in the largest node, when it has room.
    rng = _rng(spec.seed, "reactive")
    extent = draw_extent(rng, "germinal_centre", "macro") / um
    centre = blob(rng, extent, 0.35)
    mantle_scale = rng.uniform(1.08, 1.15)
    placed = _place(
        rng,
        layout.sections[0],
        centre.scaled(mantle_scale),
        (0.0, 0.8),
        cortex_edge,
        taken,
        margin,
        hilum_angle=hilum_angles[0],
    )
    if placed is not None:
        layout.mantles.append(placed)
        add("germinal_centre", StarShape(placed.cx, placed.cy, centre.radii), extent)
    # Follicles in the cortex: a mantle around a germinal centre (the centre sits toward the capsule).
    rng = _rng(spec.seed, "follicles")
    for section, hilum_angle in zip(layout.sections, hilum_angles, strict=True):
        perimeter_mm = 2 * np.pi * float(section.radii.mean()) * um / 1000
        for _ in range(min(int(rng.poisson(FOLLICLES_PER_MM * perimeter_mm)) + 2, MAX_FOLLICLES)):
            extent = draw_extent(rng, "germinal_centre", "micro") / um
            centre = blob(rng, extent, 0.4)  # as lobed as a lesion's outline: the shape is no clue
            mantle = centre.scaled(rng.uniform(*MANTLE_SCALE))
            placed = _place(
                rng, section, mantle, (0.5, 0.97), cortex_edge, taken, margin, hilum_angle=hilum_angle
            )
            if placed is None:
                continue
            layout.mantles.append(placed)
            shift = rng.uniform(0.0, 0.6) * (placed.r_min - centre.r_max)
            toward = np.arctan2(placed.cy - section.cy, placed.cx - section.cx)
            centre = StarShape(
                placed.cx + shift * np.cos(toward), placed.cy + shift * np.sin(toward), centre.radii
            )
            add("germinal_centre", centre, extent)
            taken[-1] = (placed.cx, placed.cy, placed.r_max)  # others keep clear of the whole follicle
    # Sinus histiocytes: in the subcapsular sinus (just under the capsule) or in the medulla.
    rng = _rng(spec.seed, "histiocytes")
    for mimics, count in (("micro", 2 + int(rng.poisson(1.5))), ("itc", 3 + int(rng.poisson(2.0)))):
        for _ in range(count):
            index = int(rng.integers(len(layout.sections)))
            section, node = layout.sections[index], layout.nodes[index]
            extent = draw_extent(rng, "histiocyte_cluster", mimics) / um
            shape = blob(rng, extent, 0.35)
            if rng.random() < 0.5:
                placed = _place(rng, section, shape, (0.9, 1.0), 20.0 / um, taken, margin)
            else:
                placed = _place(
                    rng, section, shape, (0.0, 0.8), cortex_edge, taken, margin, inside=node.medulla
                )
            if placed is not None:
                add("histiocyte_cluster", placed, extent)
    # Large benign cells, scattered in the paracortex.
    rng = _rng(spec.seed, "large_cells")
    for _ in range(3 + int(rng.poisson(2.0))):
        section = layout.sections[int(rng.integers(len(layout.sections)))]
        extent = draw_extent(rng, "large_cells", "itc") / um
        shape = blob(rng, extent, 0.4)
        placed = _place(rng, section, shape, (0.2, 0.8), cortex_edge, taken, margin)
        if placed is not None:
            add("large_cells", placed, extent)
