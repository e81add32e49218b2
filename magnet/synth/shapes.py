"""Shapes evaluated per pixel, in level-0 coordinates, with coverage anti-aliased to the pixel size.

Every shape answers ``coverage(xs, ys, d)``: for pixel centres ``xs`` (columns) and ``ys`` (rows) in level-0
pixels and a pixel size of ``d`` level-0 pixels, the fraction of each pixel that the shape covers, in
``[0, 1]`` (float32, shape ``(len(ys), len(xs))``). A linear ramp of width ``d`` across the edge is the exact
area fraction for a straight edge, so a coarse level equals the area average of level 0 in mean colour
(issue #3, "consistency across levels") without rendering level 0. ``None`` means "no pixel touched"
(bounding-box culling), which keeps a typical region cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * np.pi


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

    def depth(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """``r(theta) - rho``: positive inside, roughly the distance to the outline (level-0 px)."""
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        rho = np.sqrt(dx * dx + dy * dy)
        k = len(self.radii)
        t = np.arctan2(dy, dx) * np.float32(k / TWO_PI)
        t %= np.float32(k)
        i0 = t.astype(np.int32)
        frac = t - i0
        lut = np.append(self.radii, self.radii[0]).astype(np.float32)
        radius = lut.take(i0)
        radius += (lut.take(i0 + 1) - radius) * frac
        return radius - rho

    def coverage(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray | None:
        half = 0.5 * d
        rmax = self.r_max + half
        if xs[-1] < self.cx - rmax or xs[0] > self.cx + rmax or ys[-1] < self.cy - rmax or ys[0] > self.cy + rmax:
            return None
        # Fully inside the inscribed circle: no per-pixel work.
        corner_x = max(abs(xs[0] - self.cx), abs(xs[-1] - self.cx)) + half
        corner_y = max(abs(ys[0] - self.cy), abs(ys[-1] - self.cy)) + half
        if corner_x * corner_x + corner_y * corner_y < (self.r_min - d) ** 2:
            return np.ones((len(ys), len(xs)), np.float32)
        cov = self.depth(xs, ys)
        cov *= np.float32(1.0 / d)
        cov += np.float32(0.5)
        return np.clip(cov, 0.0, 1.0, out=cov)


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
    by harmonics 2..max_harmonic with amplitudes ``roughness / k`` (smooth, lobed, tissue-like outlines)."""
    angles = TWO_PI * np.arange(n_vertices) / n_vertices
    phi = rng.uniform(0, np.pi)
    a, b = radius, radius * aspect
    c, s = np.cos(angles - phi), np.sin(angles - phi)
    base = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
    ks = np.arange(2, max_harmonic + 1)
    amps = roughness / ks * rng.standard_normal(len(ks))
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

    def coverage(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray | None:
        r = self.reach + d
        if xs[-1] < self.cx - r or xs[0] > self.cx + r or ys[-1] < self.cy - r or ys[0] > self.cy + r:
            return None
        c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        u = dx * c + dy * s
        v = dy * c - dx * s
        v -= np.float32(self.wobble) * np.sin(u * np.float32(TWO_PI / self.wavelength) + np.float32(self.phase))
        inv_d = np.float32(1.0 / d)
        across = np.clip((np.float32(0.5 * self.width) - np.abs(v)) * inv_d + 0.5, 0.0, 1.0)
        along = np.clip((np.float32(0.5 * self.length) - np.abs(u)) * inv_d + 0.5, 0.0, 1.0)
        return across * along


def interval_coverage(centres: np.ndarray, d: float, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """1-D: fraction of each pixel ``[c - d/2, c + d/2]`` covered by the union of disjoint intervals."""
    lo = centres[:, None] - 0.5 * d
    hi = centres[:, None] + 0.5 * d
    overlap = np.clip(np.minimum(hi, ends[None, :]) - np.maximum(lo, starts[None, :]), 0.0, None)
    return (overlap.sum(1) / d).astype(np.float32)
