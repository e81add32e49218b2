"""Shapes evaluated per pixel, in level-0 coordinates, with coverage anti-aliased to the pixel size.

Every shape answers ``coverage(xs, ys, d)``: for pixel centres ``xs`` (columns) and ``ys`` (rows) in level-0
pixels and a pixel size of ``d`` level-0 pixels, the fraction of each pixel that the shape covers, in
``[0, 1]`` (float32, shape ``(len(ys), len(xs))``). A linear ramp of width ``d`` across the edge is the exact
area fraction for a straight edge, so a coarse level equals the area average of level 0 in mean colour
(docs/virtual-slides.md, "Consistency across levels") without rendering level 0.

``window(xs, ys, d)`` gives the same only over the shape's bounding box, as ``(rows, cols, coverage)``, or
``None`` when no pixel is touched: at coarse levels a region holds the whole slide and dozens of small
shapes, and each must cost its own area, not the region's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * np.pi

Window = tuple[slice, slice, np.ndarray]


def _box(
    xs: np.ndarray, ys: np.ndarray, x_lo: float, x_hi: float, y_lo: float, y_hi: float
) -> tuple[slice, slice] | None:
    """Rows and columns of the pixel centres inside ``[x_lo, x_hi] x [y_lo, y_hi]`` (sorted centres)."""
    c0, c1 = np.searchsorted(xs, x_lo), np.searchsorted(xs, x_hi, side="right")
    r0, r1 = np.searchsorted(ys, y_lo), np.searchsorted(ys, y_hi, side="right")
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def union_window(shapes: list, xs: np.ndarray, ys: np.ndarray, d: float) -> Window | None:  # type: ignore[type-arg]
    """Pixel-wise maximum coverage of ``shapes`` over the bounding window of those touching the region."""
    return merge_windows([hit for hit in (shape.window(xs, ys, d) for shape in shapes) if hit is not None])


def merge_windows(hits: list[Window]) -> Window | None:
    """Pixel-wise maximum of several windows, over their common bounding window."""
    if not hits:
        return None
    r0, r1 = min(h[0].start for h in hits), max(h[0].stop for h in hits)
    c0, c1 = min(h[1].start for h in hits), max(h[1].stop for h in hits)
    if len(hits) == 1:
        return hits[0]
    total = np.zeros((r1 - r0, c1 - c0), np.float32)
    for rows, cols, cov in hits:
        part = total[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
        np.maximum(part, cov, out=part)
    return slice(r0, r1), slice(c0, c1), total


def union(shapes: list, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray | None:  # type: ignore[type-arg]
    """Pixel-wise maximum coverage of ``shapes`` over the whole region; ``None`` if none touches it."""
    hit = union_window(shapes, xs, ys, d)
    if hit is None:
        return None
    total = np.zeros((len(ys), len(xs)), np.float32)
    total[hit[0], hit[1]] = hit[2]
    return total


@dataclass(frozen=True)
class StarShape:
    """A star-shaped outline: radius ``radii[k]`` at angle ``2*pi*k/K`` around ``(cx, cy)`` (level-0 px).

    The radius between samples is interpolated linearly in the angle; ``polygon()`` gives the same samples
    as vertices, which is the ground-truth outline (sub-pixel apart from the rendered edge for K >= 256).
    """

    cx: float
    cy: float
    radii: np.ndarray  # (K,) float64

    @property
    def r_max(self) -> float:
        return float(self.radii.max())

    @property
    def r_min(self) -> float:
        return float(self.radii.min())

    def polygon(self) -> np.ndarray:
        k = len(self.radii)
        angles = TWO_PI * np.arange(k) / k
        return np.stack([self.cx + self.radii * np.cos(angles), self.cy + self.radii * np.sin(angles)], 1)

    def extent(self) -> float:
        """Largest extent (maximum Feret diameter) of the outline, in level-0 pixels."""
        poly = self.polygon()
        diff = poly[:, None, :] - poly[None, :, :]
        return float(np.sqrt((diff**2).sum(-1).max()))

    def scaled(self, factor: float) -> StarShape:
        return StarShape(self.cx, self.cy, self.radii * factor)

    def radius_at(self, angle: float) -> float:
        k = len(self.radii)
        t = (angle % TWO_PI) / TWO_PI * k
        i = int(t) % k
        f = t - int(t)
        return float(self.radii[i] * (1 - f) + self.radii[(i + 1) % k] * f)

    def depth(self, xs: np.ndarray, ys: np.ndarray, saturate: float | None = None) -> np.ndarray:
        """``r(theta) - rho``: positive inside, roughly the distance to the outline (level-0 px).

        With ``saturate = s``, only pixels whose distance from the centre lies within ``s`` of the radius
        range are computed; nearer ones get ``s`` and farther ones ``-s``, bounds on their true depth. A
        caller that clips the depth to ``[-s, s]`` gets the same values, without the angle of every pixel of
        a large shape's interior (the arctangent is most of the cost)."""
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        rho = np.sqrt(dx * dx + dy * dy)
        if saturate is None or rho.size < 4096:  # small: masking costs more than it saves
            return self._radius(dy, dx) - rho
        inside = rho <= np.float32(self.r_min - saturate)
        band = ~inside & (rho < np.float32(self.r_max + saturate))
        if band.all():
            return self._radius(dy, dx) - rho
        out = np.where(inside, np.float32(saturate), np.float32(-saturate))
        if band.any():
            dy_band = np.broadcast_to(dy, band.shape)[band]
            dx_band = np.broadcast_to(dx, band.shape)[band]
            out[band] = self._radius(dy_band, dx_band) - rho[band]
        return out

    @functools.cached_property
    def _radius_lut(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 radius at each sample and the step to the next one (the last wraps to ``radii[0]``)."""
        lut = np.append(self.radii, self.radii[0]).astype(np.float32)
        return lut[:-1], lut[1:] - lut[:-1]

    def _radius(self, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """``r(theta)`` at the angles of offsets ``(dy, dx)`` (float32, broadcast)."""
        k = len(self.radii)
        t = np.arctan2(dy, dx)
        t *= np.float32(k / TWO_PI)
        # t % k (|t| < k here) as numpy's remainder computes it, t + k in float32 where t < 0, without its
        # slow loop. In float32, (-tiny) + k rounds to exactly k: clamp below so the last segment interpolates
        # to radii[0].
        t += (t < 0) * np.float32(k)
        i0 = t.astype(np.int32)
        np.minimum(i0, k - 1, out=i0)
        # The fraction (float32 t minus an integer) and the step along the segment in float64, the sum rounded
        # to float32: the arithmetic of ``lut[i0] + (lut[i0 + 1] - lut[i0]) * (t - i0)`` in numpy's promotion.
        step = np.subtract(t, i0, dtype=np.float64)
        radius, slope = self._radius_lut
        step *= slope.take(i0)
        radius = radius.take(i0)
        np.add(radius, step, out=radius, casting="same_kind")
        return radius

    def _near(
        self, xs: np.ndarray, ys: np.ndarray, d: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray, float] | None:
        """The pixels near the shape: rows, cols, their centres, and the squared distance of the farthest
        pixel corner from the shape's centre (None when the grid misses the shape)."""
        reach = self.r_max + d
        box = _box(xs, ys, self.cx - reach, self.cx + reach, self.cy - reach, self.cy + reach)
        if box is None:
            return None
        rows, cols = box
        xs, ys = xs[cols], ys[rows]
        half = 0.5 * d
        corner_x = max(abs(xs[0] - self.cx), abs(xs[-1] - self.cx)) + half
        corner_y = max(abs(ys[0] - self.cy), abs(ys[-1] - self.cy)) + half
        return rows, cols, xs, ys, corner_x * corner_x + corner_y * corner_y

    def window(self, xs: np.ndarray, ys: np.ndarray, d: float) -> Window | None:
        near = self._near(xs, ys, d)
        if near is None:
            return None
        rows, cols, xs, ys, corner_sq = near
        # Fully inside the inscribed circle: no per-pixel work.
        if corner_sq < (self.r_min - d) ** 2:
            return rows, cols, np.ones((len(ys), len(xs)), np.float32)
        cov = self.depth(xs, ys, saturate=d)
        cov *= np.float32(1.0 / d)
        cov += np.float32(0.5)
        return rows, cols, np.clip(cov, 0.0, 1.0, out=cov)

    def coverage(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray | None:
        return union([self], xs, ys, d)

    def window_with_rim(
        self, xs: np.ndarray, ys: np.ndarray, d: float, inset: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray | None] | None:
        """``window`` plus the coverage of the band within ``inset`` of the outline (``None``: empty)."""
        near = self._near(xs, ys, d)
        if near is None:
            return None
        rows, cols, xs, ys, corner_sq = near
        if corner_sq < (self.r_min - inset - d) ** 2:
            return rows, cols, np.ones((len(ys), len(xs)), np.float32), None
        depth = self.depth(xs, ys, saturate=inset + d)
        depth *= np.float32(1.0 / d)
        depth += np.float32(0.5)
        cov = np.clip(depth, 0.0, 1.0)
        depth -= np.float32(inset / d)
        rim = cov - np.clip(depth, 0.0, 1.0, out=depth)
        return rows, cols, cov, rim


def make_star(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    aspect: float,
    roughness: float,
    n_vertices: int = 256,
    max_harmonic: int = 24,
) -> StarShape:
    """An irregular ellipse: semi-axes ``radius`` and ``radius*aspect``, random rotation, log-radius perturbed
    by harmonics 2..max_harmonic with amplitudes ``roughness * k**-1.6`` (lobed, smooth, tissue-like)."""
    angles = TWO_PI * np.arange(n_vertices) / n_vertices
    phi = rng.uniform(0, np.pi)
    a, b = radius, radius * aspect
    c, s = np.cos(angles - phi), np.sin(angles - phi)
    base = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
    ks = np.arange(2, max_harmonic + 1)
    amps = roughness * ks**-1.6 * rng.standard_normal(len(ks))
    phases = rng.uniform(0, TWO_PI, len(ks))
    log_pert = (amps[:, None] * np.cos(ks[:, None] * angles[None, :] + phases[:, None])).sum(0)
    return StarShape(float(cx), float(cy), base * np.exp(log_pert))


@dataclass(frozen=True)
class Band:
    """A wavy stroke (pen mark, tissue fold): centre, direction, length, width and a sinusoidal wobble."""

    cx: float
    cy: float
    angle: float
    length: float
    width: float
    wobble: float
    wavelength: float
    phase: float

    @property
    def reach(self) -> float:
        return 0.5 * self.length + self.wobble + self.width

    def window(self, xs: np.ndarray, ys: np.ndarray, d: float) -> Window | None:
        r = self.reach + d
        box = _box(xs, ys, self.cx - r, self.cx + r, self.cy - r, self.cy + r)
        if box is None:
            return None
        rows, cols = box
        xs, ys = xs[cols], ys[rows]
        c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        u = dx * c + dy * s
        v = dy * c - dx * s
        v -= np.float32(self.wobble) * np.sin(
            u * np.float32(TWO_PI / self.wavelength) + np.float32(self.phase)
        )
        inv_d = np.float32(1.0 / d)
        across = np.clip((np.float32(0.5 * self.width) - np.abs(v)) * inv_d + 0.5, 0.0, 1.0)
        along = np.clip((np.float32(0.5 * self.length) - np.abs(u)) * inv_d + 0.5, 0.0, 1.0)
        return rows, cols, across * along

    def coverage(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray | None:
        return union([self], xs, ys, d)


def interval_coverage(centres: np.ndarray, d: float, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """1-D: fraction of each pixel ``[c - d/2, c + d/2]`` covered by the union of disjoint intervals."""
    lo = centres[:, None] - 0.5 * d
    hi = centres[:, None] + 0.5 * d
    overlap = np.clip(np.minimum(hi, ends[None, :]) - np.maximum(lo, starts[None, :]), 0.0, None)
    return (overlap.sum(1) / d).astype(np.float32)
