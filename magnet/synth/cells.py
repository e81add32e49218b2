"""Procedural cell textures of version 2: the compartments of a lymph node and the benign look-alikes.

Same channels and bank machinery as ``textures.py`` (dark nucleus, pale nucleus, clear space, dense eosin;
the rest is the class background; box-averaged pyramid 1, 4, 16), drawn here from a *population* of cell
types on a jittered grid. Each grid cell draws one type: an optional cytoplasm disc, a nucleus (size, shape,
chromatin), an optional nucleolus and optional dark debris (tingible bodies). Border cells keep their
drawing inside the patch, so a patch border is just another cell border.

Cell sizes follow standard histology (e.g. Young et al., Wheater's Functional Histology, lymphoid tissues):
small lymphocytes 6-7 um nuclei; germinal-centre centroblasts 9-10 um vesicular nuclei with small nucleoli at
the membrane and centrocytes 6-8 um cleaved nuclei, among tingible-body macrophages (15-20 um, pale, with
engulfed dark apoptotic debris); sinus histiocytes 15-20 um with abundant pale cytoplasm and small bland oval
nuclei; immunoblasts (large benign cells) with 9 um vesicular nuclei and one central nucleolus, single among
lymphocytes; medulla as cords of lymphocytes and plasma cells between clear sinus channels; adipocytes
50-100 um, clear, with thin walls.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from magnet.synth.textures import BANK_SEED, SCALES, TextureBank, _make_bank, _smooth_noise, voronoi_edges


@dataclass(frozen=True)
class CellType:
    share: float  # probability that a grid cell holds this type
    nucleus_um: float  # nucleus radius (mean; sd 12 %)
    dark: float  # dark-nucleus fraction (chromatin)
    pale: float = 0.0  # pale-nucleus fraction (vesicular nucleus)
    aspect: tuple[float, float] = (0.75, 1.0)
    irregularity: float = 0.05  # radial harmonics of the outline (cleaved nuclei: larger)
    cytoplasm_um: float = 0.0  # radius of a cytoplasm disc around the nucleus (0: none)
    cytoplasm: tuple[float, float] = (0.0, 0.0)  # (clear, eosin) fractions of the cytoplasm
    nucleolus_um: float = 0.0
    nucleolus_at: float = 0.6  # nucleolus offset from the nucleus centre, as a fraction of its radius
    debris: int = 0  # dark apoptotic bodies inside the cytoplasm (tingible-body macrophage)
    offset: float = 0.0  # nucleus off-centre in its cytoplasm, as a fraction of the cytoplasm radius


@dataclass(frozen=True)
class Population:
    pitch_um: float
    types: tuple[CellType, ...]
    clear_background: float = 0.0  # clear space between cells
    eosin_background: float = 0.08
    sinus_channels: bool = False  # medulla: cords of cells between clear sinus channels


LYMPHOCYTE = CellType(0.0, 3.3, 0.85, aspect=(0.8, 1.0))
POPULATIONS = {
    # Germinal centre: centroblasts, centrocytes, tingible-body macrophages; looser than the mantle.
    "germinal": Population(
        9.5,
        (
            CellType(0.45, 4.6, 0.22, pale=0.85, nucleolus_um=0.7, aspect=(0.8, 1.0)),
            CellType(0.37, 3.4, 0.7, aspect=(0.55, 0.85), irregularity=0.16),
            CellType(0.08, 2.6, 0.55, cytoplasm_um=8.5, cytoplasm=(0.35, 0.25), debris=4, offset=0.4),
            CellType(0.05, 3.3, 0.85),
        ),
        clear_background=0.05,
    ),
    # Sinus histiocytes: abundant pale cytoplasm, small bland oval nuclei, a few lymphocytes between.
    "histiocyte": Population(
        15.0,
        (
            CellType(
                0.75,
                2.6,
                0.5,
                pale=0.3,
                aspect=(0.5, 0.75),
                cytoplasm_um=7.5,
                cytoplasm=(0.3, 0.35),
                offset=0.3,
            ),
            CellType(0.2, 3.3, 0.85),
        ),
        clear_background=0.15,
    ),
    # Large benign cells scattered singly among small lymphocytes (immunoblasts: big vesicular nucleus, one
    # central nucleolus, a rim of amphophilic cytoplasm): not a cohesive sheet like carcinoma.
    "large_cells": Population(
        9.0,
        (
            CellType(0.72, 3.3, 0.85, aspect=(0.8, 1.0)),
            CellType(
                0.28,
                4.4,
                0.15,
                pale=0.75,
                nucleolus_um=0.9,
                nucleolus_at=0.0,
                cytoplasm_um=7.0,
                cytoplasm=(0.1, 0.3),
            ),
        ),
    ),
    # Medulla: cords of lymphocytes and plasma cells (eccentric nuclei, pink cytoplasm) and sinuses.
    "medulla": Population(
        8.5,
        (
            CellType(0.6, 3.3, 0.85),
            CellType(0.3, 3.0, 0.8, cytoplasm_um=4.5, cytoplasm=(0.0, 0.45), offset=0.4),
        ),
        eosin_background=0.14,
        sinus_channels=True,
    ),
}
N_PATCHES = 4
# Random stream of each bank (textures.py uses 0 and 1): fixed numbers, so adding a bank moves no other.
_BANK_STREAMS = {"germinal": 2, "histiocyte": 3, "medulla": 4, "fat": 5, "large_cells": 6}
PATCH_UM = 128.0
FAT_PITCH_UM = 70.0
FAT_PATCH_UM = 280.0  # adipocytes are large: a larger patch, fewer of them (memory)


def _grid(pitch_um: float, patch_um: float, mpp: float) -> tuple[int, int]:
    """(pitch px, cells per side) with the patch side a multiple of 16 px (for the 1/16 pyramid)."""
    pitch = max(4, round(pitch_um / mpp))
    step = 16 // int(np.gcd(pitch, 16))
    return pitch, int(max(step, step * round(patch_um / mpp / pitch / step)))


def _population_patch(rng: np.random.Generator, population: Population, mpp: float) -> np.ndarray:
    pitch, n = _grid(population.pitch_um, PATCH_UM, mpp)
    t = n * pitch
    shares = np.array([c.share for c in population.types])
    choice = np.searchsorted(np.cumsum(shares / shares.sum()), rng.random((n, n)))
    choice = np.minimum(choice, len(population.types) - 1)
    jitter = 0.4 * pitch
    cx = (np.arange(n)[None, :] + 0.5) * pitch + rng.uniform(-jitter, jitter, (n, n))
    cy = (np.arange(n)[:, None] + 0.5) * pitch + rng.uniform(-jitter, jitter, (n, n))
    fine = _smooth_noise(rng, t, 0.6 / mpp)
    dark, pale, clear, eosin, cover = (np.zeros((t, t), np.float32) for _ in range(5))
    cords = None
    if population.sinus_channels:  # cords where a 15 um-smooth field is high, sinus channels elsewhere
        # The field differs between patches, so the medulla bank cross-fades its blocks like real patches
        # (textures.py): no seam survives.
        cords = np.clip((_smooth_noise(rng, t, 15.0 / mpp) + 0.3) * 2.0, 0, 1)
    for iy in range(n):
        for ix in range(n):
            cell = population.types[choice[iy, ix]]
            if cords is not None:
                inside = cords[min(t - 1, int(cy[iy, ix])), min(t - 1, int(cx[iy, ix]))]
                if rng.random() > 0.1 + 0.9 * inside:
                    continue
            r = max(1.0, rng.normal(cell.nucleus_um, 0.12 * cell.nucleus_um) / mpp)
            rc = cell.cytoplasm_um / mpp
            reach = max(r * (1 + 2.5 * cell.irregularity), rc) + 1.0
            x = float(np.clip(cx[iy, ix], reach, t - reach))
            y = float(np.clip(cy[iy, ix], reach, t - reach))
            if rc > 0:
                box, cov, _ = _disc(x, y, rc, 1.0, 0.0, (0.0, 0.0), (0.0, 0.0), t)
                clear[box] = np.maximum(clear[box], cov * cell.cytoplasm[0])
                eosin[box] = np.maximum(eosin[box], cov * cell.cytoplasm[1])
                cover[box] = np.maximum(cover[box], cov)
                angle = rng.uniform(0, 2 * np.pi)
                x += cell.offset * (rc - r) * np.cos(angle)
                y += cell.offset * (rc - r) * np.sin(angle)
                for _ in range(cell.debris):  # tingible bodies: small dark round debris in the cytoplasm
                    a, rho = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.75) * rc
                    bx, by = x + rho * np.cos(a), y + rho * np.sin(a)
                    bx, by = float(np.clip(bx, 3, t - 3)), float(np.clip(by, 3, t - 3))
                    box, cov, _ = _disc(bx, by, rng.uniform(0.6, 1.3) / mpp, 1.0, 0.0, (0, 0), (0, 0), t)
                    dark[box] = np.maximum(dark[box], cov * 0.95)
            harm = np.clip(
                rng.normal(0, cell.irregularity, 2), -1.2 * cell.irregularity, 1.2 * cell.irregularity
            )
            box, cov, depth = _disc(
                x,
                y,
                r,
                rng.uniform(*cell.aspect),
                rng.uniform(0, np.pi),
                harm,
                rng.uniform(0, 2 * np.pi, 2),
                t,
            )
            cover[box] = np.maximum(cover[box], cov)
            clear[box] *= 1 - cov
            eosin[box] *= 1 - cov
            chromatin = np.clip(cell.dark - 0.2 * fine[box], 0, 1) if cell.pale == 0 else cell.dark
            if cell.pale > 0:  # vesicular: pale nucleus, darker membrane rim
                pale[box] = np.maximum(pale[box], cov * cell.pale)
                rim = np.clip(cov - np.clip(depth - 1.0 / mpp + 0.5, 0, 1), 0, 1)
                dark[box] = np.maximum(dark[box], cov * 0.08 + 0.2 * rim)
            else:
                dark[box] = np.maximum(dark[box], cov * chromatin)
            if cell.nucleolus_um > 0:  # near the membrane (centroblast) or central (immunoblast)
                a = rng.uniform(0, 2 * np.pi)
                nx, ny = x + cell.nucleolus_at * r * np.cos(a), y + cell.nucleolus_at * r * np.sin(a)
                nbox, ncov, _ = _disc(nx, ny, cell.nucleolus_um / mpp, 1.0, 0.0, (0, 0), (0, 0), t)
                dark[nbox] = np.maximum(dark[nbox], 0.6 * ncov)
    free = 1 - cover
    # Fine-grained only: a broad tone field would differ between patches and show their borders.
    clear = np.maximum(clear, np.clip(population.clear_background + 0.05 * fine, 0, 0.8) * free)
    if cords is not None:
        clear = np.maximum(clear, (1 - cords) * 0.55 * free)
    eosin = np.maximum(eosin, np.clip(population.eosin_background + 0.03 * fine, 0, 1) * free)
    return _pack(dark, pale, clear, eosin)


def _disc(
    x: float,
    y: float,
    r: float,
    aspect: float,
    angle: float,
    harm: tuple[float, float] | np.ndarray,
    phase: tuple[float, float] | np.ndarray,
    t: int,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Coverage of an irregular ellipse (radius ``r`` px) in its bounding box of a ``t x t`` patch."""
    reach = r * (1.0 + 2.5 * max(abs(float(harm[0])), abs(float(harm[1])))) / min(aspect, 1.0) + 1.0
    x0, x1 = max(0, int(x - reach)), min(t, int(x + reach) + 2)
    y0, y1 = max(0, int(y - reach)), min(t, int(y + reach) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - x
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - y
    c, s = np.cos(angle), np.sin(angle)
    u = dx * c + dy * s
    v = (dy * c - dx * s) / aspect
    if harm[0] == 0 and harm[1] == 0:  # a plain ellipse (cytoplasm, debris, nucleoli): no angle needed
        depth = r - np.sqrt(u * u + v * v)
    else:
        theta = np.arctan2(v, u)
        edge = 1.0 + harm[0] * np.cos(2 * theta + phase[0]) + harm[1] * np.cos(3 * theta + phase[1])
        depth = (edge - np.sqrt(u * u + v * v) / r) * r
    return (slice(y0, y1), slice(x0, x1)), np.clip(depth + 0.5, 0, 1).astype(np.float32), depth


def _pack(dark: np.ndarray, pale: np.ndarray, clear: np.ndarray, eosin: np.ndarray) -> np.ndarray:
    channels = np.stack([dark, pale, clear, eosin], -1).astype(np.float32)
    channels /= np.maximum(channels.sum(-1, keepdims=True), 1.0)
    return np.rint(channels * 255).astype(np.uint8)


def _fat_patch(rng: np.random.Generator, mpp: float) -> np.ndarray:
    """Adipocytes: large clear cells with thin eosin walls; the patch border is one more wall."""
    pitch, n = _grid(FAT_PITCH_UM, FAT_PATCH_UM, mpp)
    t = n * pitch
    jitter = 0.3 * pitch
    cx = (np.arange(n)[None, :] + 0.5) * pitch + rng.uniform(-jitter, jitter, (n, n))
    cy = (np.arange(n)[:, None] + 0.5) * pitch + rng.uniform(-jitter, jitter, (n, n))
    walls = _walls(cx, cy, pitch, t, 1.5 / mpp)
    dark = np.zeros((t, t), np.float32)
    for _ in range(n):  # a few flat nuclei squeezed into the walls
        y, x = int(rng.integers(8, t - 8)), int(rng.integers(8, t - 8))
        box, cov, _ = _disc(x, y, 3.0 / mpp, 0.3, rng.uniform(0, np.pi), (0, 0), (0, 0), t)
        dark[box] = np.maximum(dark[box], 0.7 * cov * walls[box])
    return _pack(dark, np.zeros_like(dark), 0.97 * (1 - walls), 0.75 * walls)


def _walls(cx: np.ndarray, cy: np.ndarray, pitch: int, t: int, width: float) -> np.ndarray:
    """Voronoi cell walls of the centres; the centres mirrored across the patch border make that border a
    wall too, so neighbouring patches meet at a wall, never inside a cell."""
    n = cx.shape[0]
    # A ring of mirrored centres around the grid: (n + 2) x (n + 2).
    px = np.pad(cx, 1, mode="edge")
    py = np.pad(cy, 1, mode="edge")
    px[:, 0], px[:, -1] = -px[:, 1], 2 * t - px[:, -2]
    py[0, :], py[-1, :] = -py[1, :], 2 * t - py[-2, :]
    coords = np.arange(t, dtype=np.float32) + 0.5
    cell = np.minimum((coords // pitch).astype(np.int64), n - 1) + 1
    neighbours = (
        (px[rows[:, None], cols[None, :]], py[rows[:, None], cols[None, :]])
        for rows, cols in ((cell + oy, cell + ox) for oy in (-1, 0, 1) for ox in (-1, 0, 1))
    )
    return voronoi_edges(coords, neighbours, width)


@functools.lru_cache(maxsize=8)
def cell_bank(kind: str, mpp: float) -> TextureBank:
    """The version-2 procedural bank of ``kind`` (``germinal``, ``histiocyte``, ``large_cells``, ``medulla``,
    ``fat``)."""
    rng = np.random.default_rng([BANK_SEED, _BANK_STREAMS[kind], round(mpp * 1000)])
    if kind == "fat":
        patches = _fat_patch(rng, mpp)[None]  # featureless at low power: one patch under 8 dihedral maps
    else:
        patches = np.stack([_population_patch(rng, POPULATIONS[kind], mpp) for _ in range(N_PATCHES)])
    return _make_bank(
        patches, blend=POPULATIONS[kind].sinus_channels if kind in POPULATIONS else False, scales=SCALES
    )
