"""Texture banks and their placement: how cells look at every magnification.

A bank holds a few square patches of one tissue class ("normal" lymphoid parenchyma, "tumour" carcinoma) as
4 channels, with a pyramid of box-averaged copies (scales 1, 4, 16 level-0 px per pixel). A slide covers the
level-0 plane with blocks of one patch size; each block shows a patch chosen by a hash of (seed, block) under
one of the 8 dihedral maps. A region at a bank scale is therefore copied from the matching pyramid level,
block by block (a few to a few hundred slice copies: no per-pixel Python), and equals the area average of
level 0 exactly. Coarser than the bank, a region takes the bank's mean channels (the area-average look).

Two sources behind this one interface (docs/virtual-slides.md, "Textures and colour"):
- ``procedural``: cells drawn here, once per process. Channels are material fractions (dark nucleus, pale
  nucleus, clear space, dense eosin; the rest is the class background). Nuclei sit on a jittered grid whose
  cell size divides the patch, and a patch's border cells keep their nuclei inside the patch, so a patch
  border is just another cell border: seams are invisible and cannot outline a lesion.
- ``camelyon16``: real 40x H&E patches from ``labels.csv`` (channels R, G, B). Real patches do have seams, so
  four block layers offset by half a block are cross-faded (a partition of unity whose ramps sit midway
  between the layers' seams), so every seam of one layer is covered by the middle of another.

Lymphocyte nuclei about 6-7 um across, carcinoma nuclei 9-12 um with nucleoli: standard histology (e.g.
Young et al., Wheater's Functional Histology), checked against the Camelyon16 patches.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magnet.errors import SlideError

BANK_SEED = 20240531  # all slides share the banks; per-slide variety comes from block hashing and stain
SCALES = (1, 4, 16)


@dataclass(frozen=True)
class TextureBank:
    """Patches of one class: ``pyramid[s]`` is ``(N, T/s, T/s, 4)`` uint8 for ``s`` in ``scales``."""

    tile: int  # T, block size in level-0 pixels
    pyramid: dict[int, np.ndarray]
    mean: np.ndarray  # (4,) float32, mean channel value over the bank (0..255)
    blend: bool  # cross-fade four offset layers (real patches) or tile seam-free (procedural)
    # The 8 dihedral copies (8, N, T/s, T/s, 4), contiguous, for the scales with many small blocks per
    # region (s > 1), where building rotated views block by block would cost more than the copies.
    variants: dict[int, np.ndarray]

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(sorted(self.pyramid))


def _box_reduce(patches: np.ndarray, factor: int) -> np.ndarray:
    n, t, _, c = patches.shape
    small = patches.reshape(n, t // factor, factor, t // factor, factor, c).astype(np.float32).mean((2, 4))
    return np.rint(small).astype(np.uint8)


def _make_bank(patches: np.ndarray, blend: bool, scales: tuple[int, ...]) -> TextureBank:
    pyramid = {
        s: (patches if s == 1 else _box_reduce(patches, s)) for s in scales if patches.shape[1] % s == 0
    }
    variants = {
        s: np.stack([_dihedral(p.transpose(1, 2, 0, 3), c).transpose(2, 0, 1, 3) for c in range(8)])
        for s, p in pyramid.items()
        if s > 1
    }
    mean = patches.reshape(-1, 4).astype(np.float32).mean(0)
    return TextureBank(patches.shape[1], pyramid, mean, blend, variants)


# --- procedural cells ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellRecipe:
    pitch_um: float  # grid cell size (mean nucleus spacing)
    radius_um: tuple[float, float]  # nucleus radius mean, sd
    aspect: tuple[float, float]  # minor/major axis ratio range
    irregularity: float  # amplitude of the radial harmonics of the outline
    presence: float  # probability that a cell holds a nucleus


RECIPES = {
    # Dense small dark round lymphocytes (about 6.6 um nuclei, 7.8 um apart).
    "normal": CellRecipe(7.8, (3.3, 0.4), (0.8, 1.0), 0.05, 0.95),
    # Carcinoma: larger, paler, irregular, clustered nuclei with nucleoli (about 11 um nuclei, 15 um apart).
    "tumour": CellRecipe(15.0, (5.6, 0.9), (0.6, 0.95), 0.12, 0.92),
}
N_PATCHES = 6
PATCH_PX = 512  # approximate patch side at level 0


def _grid_size(pitch_px: int) -> int:
    """Cells per patch side: about PATCH_PX wide and a multiple of 16 px overall (for the 1/16 pyramid)."""
    step = 16 // np.gcd(pitch_px, 16)
    return int(max(step, step * round(PATCH_PX / pitch_px / step)))


def _smooth_noise(rng: np.random.Generator, t: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise on a ``t x t`` torus (filtered in Fourier space)."""
    freq_y = np.fft.fftfreq(t)[:, None]
    freq_x = np.fft.rfftfreq(t)[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (freq_x**2 + freq_y**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((t, t))) * transfer, s=(t, t))
    return (field / (field.std() + 1e-9)).astype(np.float32)


def _procedural_patch(rng: np.random.Generator, recipe: CellRecipe, kind: str, mpp: float) -> np.ndarray:
    pitch = max(4, round(recipe.pitch_um / mpp))
    n = _grid_size(pitch)
    t = n * pitch
    r_mean, r_sd = (v / mpp for v in recipe.radius_um)
    radius = np.clip(rng.normal(r_mean, r_sd, (n, n)), 0.55 * r_mean, 1.5 * r_mean)
    aspect = rng.uniform(*recipe.aspect, (n, n))
    angle = rng.uniform(0, np.pi, (n, n))
    present = rng.random((n, n)) < recipe.presence
    kind_draw = rng.random((n, n))  # normal: 10 % pale histiocytes, 3 % red cells; tumour: all alike
    harm = np.clip(
        rng.normal(0, recipe.irregularity, (n, n, 2)), -1.2 * recipe.irregularity, 1.2 * recipe.irregularity
    )
    harm_phase = rng.uniform(0, 2 * np.pi, (n, n, 2))
    # Centres: jittered inside the cell; cells on the patch border keep the nucleus inside the patch.
    jitter = 0.45 * pitch  # large, so that no lattice shows at low power
    cx = (np.arange(n)[None, :] + 0.5) * pitch + rng.uniform(-jitter, jitter, (n, n))
    cy = (np.arange(n)[:, None] + 0.5) * pitch + rng.uniform(-jitter, jitter, (n, n))
    reach = radius * (1.0 + 2.5 * recipe.irregularity) + 1.0
    cx = np.clip(cx, reach, t - reach)
    cy = np.clip(cy, reach, t - reach)
    nucleolus = rng.uniform(-0.3, 0.3, (n, n, 2)) * radius[..., None]
    fine = _smooth_noise(rng, t, 0.6 / mpp)
    broad = _smooth_noise(rng, t, 6.0 / mpp)

    dark = np.zeros((t, t), np.float32)
    pale = np.zeros((t, t), np.float32)
    eosin = np.zeros((t, t), np.float32)
    cover = np.zeros((t, t), np.float32)
    # One nucleus at a time, inside its bounding box (a loop over nuclei, never over pixels).
    for iy, ix in zip(*np.nonzero(present), strict=True):
        r, x, y = radius[iy, ix], cx[iy, ix], cy[iy, ix]
        r_box = reach[iy, ix]
        x0, x1 = max(0, int(x - r_box)), min(t, int(x + r_box) + 2)
        y0, y1 = max(0, int(y - r_box)), min(t, int(y + r_box) + 2)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - x
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - y
        c, s = np.cos(angle[iy, ix]), np.sin(angle[iy, ix])
        u = dx * c + dy * s
        v = (dy * c - dx * s) / aspect[iy, ix]
        theta = np.arctan2(v, u)
        edge = 1.0 + harm[iy, ix, 0] * np.cos(2 * theta + harm_phase[iy, ix, 0])
        edge += harm[iy, ix, 1] * np.cos(3 * theta + harm_phase[iy, ix, 1])
        depth = (edge - np.sqrt(u * u + v * v) / r) * r
        cov = np.clip(depth + 0.5, 0, 1).astype(np.float32)
        box = (slice(y0, y1), slice(x0, x1))
        cover[box] = np.maximum(cover[box], cov)
        draw = kind_draw[iy, ix]
        if kind == "normal":
            if draw < 0.92:  # lymphocyte: small, dark, clumped chromatin
                dark[box] = np.maximum(dark[box], cov * np.clip(0.85 - 0.2 * fine[box], 0, 1))
            elif draw < 0.985:  # histiocyte / dendritic cell: larger, pale, vesicular
                pale[box] = np.maximum(pale[box], cov * 0.95)
                dark[box] = np.maximum(dark[box], cov * np.clip(0.18 + 0.12 * fine[box], 0, 1))
            else:  # red blood cell
                eosin[box] = np.maximum(eosin[box], cov * 0.7)
        else:  # carcinoma: pale vesicular nucleus, dark membrane rim, chromatin specks, one nucleolus
            rim = np.clip(cov - np.clip(depth - 1.2 / mpp + 0.5, 0, 1), 0, 1)
            chromatin = np.clip(0.5 * (fine[box] - 0.8), 0, 0.45) * cov
            ndx, ndy = dx - nucleolus[iy, ix, 0], dy - nucleolus[iy, ix, 1]
            nuc = np.clip(0.75 / mpp - np.sqrt(ndx * ndx + ndy * ndy) + 0.5, 0, 1) * (depth > 1.0)
            pale[box] = np.maximum(pale[box], cov * 0.9)
            dark[box] = np.maximum(dark[box], 0.18 * rim + chromatin + 0.8 * nuc)
    clear = np.clip(0.55 * (broad - 1.6), 0, 0.8) * (1 - cover)
    # Fine-grained only: a broad tone field would differ between patches and show their borders.
    eosin = np.maximum(eosin, np.clip(0.08 + 0.03 * fine, 0, 1) * (1 - cover))
    if kind == "tumour":
        eosin += 0.08 * _cell_borders(cx, cy, pitch, t, 1.2 / mpp) * (1 - cover)
    channels = np.stack([dark, pale, clear, eosin], -1).astype(np.float32)
    total = channels.sum(-1, keepdims=True)
    channels /= np.maximum(total, 1.0)
    return np.rint(channels * 255).astype(np.uint8)


def _cell_borders(cx: np.ndarray, cy: np.ndarray, pitch: int, t: int, width: float) -> np.ndarray:
    """Faint membranes: where the nearest and second-nearest cell centres are about equally far (Voronoi).
    Centres beyond the grid are clamped to its edge."""
    n = cx.shape[0]
    coords = np.arange(t, dtype=np.float32) + 0.5
    cell = np.minimum((coords // pitch).astype(np.int64), n - 1)
    flat_x, flat_y = cx.ravel().astype(np.float32), cy.ravel().astype(np.float32)

    def neighbours() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                flat = np.clip(cell + oy, 0, n - 1)[:, None] * n + np.clip(cell + ox, 0, n - 1)[None, :]
                yield flat_x[flat], flat_y[flat]

    return voronoi_edges(coords, neighbours(), width)


def voronoi_edges(
    coords: np.ndarray, candidates: Iterable[tuple[np.ndarray, np.ndarray]], width: float
) -> np.ndarray:
    """Weight in [0, 1] of a Voronoi edge at pixel centres ``coords`` (both axes): 1 where the nearest and
    second-nearest centre are equally far, falling to 0 when they differ by ``width`` px. ``candidates``
    gives, per neighbouring grid cell, the ``(t, t)`` centre each pixel compares against (x, y)."""
    t = len(coords)
    d1 = np.full((t, t), 1e9, np.float32)
    d2 = np.full((t, t), 1e9, np.float32)
    for px, py in candidates:
        dx = coords[None, :] - px.astype(np.float32)
        dy = coords[:, None] - py.astype(np.float32)
        dist = np.sqrt(dx * dx + dy * dy)
        closer = dist < d1
        d2 = np.where(closer, d1, np.minimum(d2, dist))
        d1 = np.where(closer, dist, d1)
    return np.clip(1.0 - (d2 - d1) / width, 0, 1).astype(np.float32)


@functools.lru_cache(maxsize=8)
def procedural_bank(kind: str, mpp: float) -> TextureBank:
    """The procedural bank of ``kind`` ("normal" or "tumour") at ``mpp`` um/px, built once per process."""
    rng = np.random.default_rng([BANK_SEED, 0 if kind == "normal" else 1, round(mpp * 1000)])
    patches = np.stack([_procedural_patch(rng, RECIPES[kind], kind, mpp) for _ in range(N_PATCHES)])
    return _make_bank(patches, blend=False, scales=SCALES)


# --- real patches -------------------------------------------------------------------------------------------
CAMELYON16_MPP = 0.243  # level 0 of the Radboud scanner in Camelyon16 (labels.csv README)


@functools.lru_cache(maxsize=8)
def camelyon16_bank(kind: str, mpp: float, folder: str) -> TextureBank:
    """Real patches of ``kind`` from ``folder/labels.csv`` (label 1 tumour, 0 normal), rescaled to ``mpp``."""
    from PIL import Image

    root = Path(folder)
    table = root / "labels.csv"
    if not table.is_file():
        raise SlideError(str(root), "texture folder has no labels.csv")
    want = "1" if kind == "tumour" else "0"
    with table.open(newline="") as fh:
        files = [row["file"] for row in csv.DictReader(fh) if row.get("label") == want]
    if not files:
        raise SlideError(str(table), f"no patches with label {want}")
    # Side at the slide's mpp, rounded to a multiple of 16 px for the 1/16 pyramid.
    side = max(16, 16 * round(256 * CAMELYON16_MPP / mpp / 16))
    patches = []
    for name in sorted(files):
        try:
            image = Image.open(root / name).convert("RGB")
        except OSError as exc:
            raise SlideError(str(root / name), f"unreadable texture patch ({exc})") from None
        rgb = np.asarray(
            image.resize((side, side), Image.Resampling.BICUBIC) if image.size != (side, side) else image
        )
        patches.append(np.concatenate([rgb, np.zeros((side, side, 1), np.uint8)], -1))
    return _make_bank(np.stack(patches), blend=True, scales=(1, 4))


# --- placement ----------------------------------------------------------------------------------------------
def _block_hash(seed: int, salt: int, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of (seed, salt, block column, block row): (len(by), len(bx)) uint64."""
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    key = np.uint64((seed * 0x165667B19E3779F9 + salt * 0x27D4EB2F165667C5) & 0xFFFFFFFFFFFFFFFF)
    v = (bx.astype(np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)) & mask
    v = v ^ (by.astype(np.uint64)[:, None] * np.uint64(0xC2B2AE3D27D4EB4F)) ^ key
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64 finaliser
        v ^= v >> np.uint64(shift)
        v *= np.uint64(mult)
    v ^= v >> np.uint64(31)
    return v


def _dihedral(patch: np.ndarray, code: int) -> np.ndarray:
    view = np.rot90(patch, code & 3)
    return view[:, ::-1] if code & 4 else view


def _fill_layer(
    patches: np.ndarray,
    variants: np.ndarray | None,
    seed: int,
    salt: int,
    px0: int,
    py0: int,
    w: int,
    h: int,
    sx: int = 0,
    sy: int = 0,
) -> np.ndarray:
    """One mosaic layer over bank pixels ``[px0, px0+w) x [py0, py0+h)``, blocks offset by ``(sx, sy)``."""
    n, ts = patches.shape[0], patches.shape[1]
    out = np.empty((h, w, patches.shape[3]), patches.dtype)
    bx = np.arange((px0 - sx) // ts, (px0 + w - 1 - sx) // ts + 1)
    by = np.arange((py0 - sy) // ts, (py0 + h - 1 - sy) // ts + 1)
    codes = _block_hash(seed, salt, bx, by)
    pids = (codes % np.uint64(n)).astype(np.int64)
    dihs = ((codes >> np.uint64(40)) & np.uint64(7)).astype(np.int64)
    for j, row in enumerate(by):
        top = row * ts + sy
        y0, y1 = max(top, py0), min(top + ts, py0 + h)
        for i, col in enumerate(bx):
            left = col * ts + sx
            x0, x1 = max(left, px0), min(left + ts, px0 + w)
            if variants is None:
                view = _dihedral(patches[pids[j, i]], int(dihs[j, i]))
            else:
                view = variants[dihs[j, i], pids[j, i]]
            out[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0] = view[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def _half_weights(coords: np.ndarray, ts: int, ramp: float) -> np.ndarray:
    """Weight of the unshifted layer along one axis: 1 mid-block, 0 at its seams, cross-fading at T/4."""
    phase = np.mod(coords, ts).astype(np.float32)
    to_own_seam = np.minimum(phase, ts - phase)
    to_other_seam = np.abs(phase - ts / 2)
    return np.clip((to_own_seam - to_other_seam) / ramp + 0.5, 0.0, 1.0)


def fill(
    bank: TextureBank, scale: int, seed: int, salt: int, px0: int, py0: int, w: int, h: int
) -> np.ndarray:
    """Channels (h, w, 4) float32 of bank pixels ``[px0, px0+w) x [py0, py0+h)`` at pyramid ``scale``."""
    return fill_arrays(bank.pyramid[scale], bank.variants.get(scale), bank.blend, seed, salt, px0, py0, w, h)


def fill_arrays(
    patches: np.ndarray,
    variants: np.ndarray | None,
    blend: bool,
    seed: int,
    salt: int,
    px0: int,
    py0: int,
    w: int,
    h: int,
) -> np.ndarray:
    """``fill`` for given patches ``(N, t, t, C)`` (any C and dtype, e.g. a bank coloured for one slide)."""
    if not blend:
        return _fill_layer(patches, variants, seed, salt, px0, py0, w, h).astype(np.float32, copy=False)
    ts = patches.shape[1]
    ramp = max(1.0, ts / 8)
    wx = _half_weights(np.arange(px0, px0 + w) + 0.5, ts, ramp)
    wy = _half_weights(np.arange(py0, py0 + h) + 0.5, ts, ramp)
    out = np.zeros((h, w, patches.shape[3]), np.float32)
    for ay in (0, 1):
        for ax in (0, 1):
            weight = (wy if ay == 0 else 1 - wy)[:, None] * (wx if ax == 0 else 1 - wx)[None, :]
            if not weight.any():
                continue
            # Layer (ax, ay) is shifted by half a block along x if ax, along y if ay; own patch choices.
            layer = _fill_layer(
                patches, variants, seed, salt * 4 + ay * 2 + ax, px0, py0, w, h, ax * ts // 2, ay * ts // 2
            )
            for channel in range(out.shape[-1]):  # not layer * weight[..., None]: a 4-wide inner loop is slow
                out[..., channel] += layer[..., channel] * weight
    return out
