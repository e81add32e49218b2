"""Render any region of a virtual slide at any pixel size, from its layout, stain and texture banks.

A region is ``w x h`` pixels of ``d`` level-0 pixels each, top-left corner at level-0 ``(x0, y0)``; pixel
``(i, j)`` covers level-0 ``[x0 + j*d, x0 + (j+1)*d) x [y0 + i*d, y0 + (i+1)*d)``. Every field is evaluated
at pixel centres with edges anti-aliased to ``d`` (see shapes.py), and textures come from the bank level of
the same scale or, coarser than the bank, from its mean (textures.py). So a coarse region is the area
average of level 0 in mean colour without rendering level 0 (issue #3). All maths is vectorised numpy
(float32); the only Python loops run over shapes and texture blocks touching the region.

Compositing, back to front: glass -> tissue (normal parenchyma, paler follicles, fibrous capsule at the
edge, lesions of carcinoma, darker folds, slow staining-thickness variation) -> grey scanner artefacts
(brightness gradient, stitching stripes, sensor noise) -> translucent pen ink.
"""

from __future__ import annotations

import numpy as np

from magnet.synth.layout import Layout
from magnet.synth.shapes import StarShape, interval_coverage
from magnet.synth.stain import ClassColour, SlideColours
from magnet.synth.textures import TextureBank, fill

CAPSULE_UM = 25.0  # thickness of the fibrous capsule drawn along the tissue edge
NOISE_SIGMA = 2.5  # grey levels of sensor noise at level 0 (averages down as 1/d)
_NOISE = np.random.default_rng(99).standard_normal((256, 256)).astype(np.float32)


class Renderer:
    """Pixels of one slide; stateless apart from the lazily fetched texture banks."""

    def __init__(
        self,
        seed: int,
        size: tuple[int, int],
        mpp: float,
        layout: Layout,
        colours: SlideColours,
        banks: dict[str, TextureBank] | None = None,
    ) -> None:
        self.seed = seed
        self.size = size
        self.mpp = mpp
        self.layout = layout
        self.colours = colours
        self.banks = banks  # {"normal": ..., "tumour": ...}; set by the slide on first render
        rng = np.random.default_rng([seed, 8])
        # Staining thickness: two slow sinusoids per axis, +-6 % of absorbance (wavelengths 1-4 mm).
        self._thick = [(rng.uniform(1000, 4000) / mpp, rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.03))
                       for _ in range(4)]

    # --- fields -----------------------------------------------------------------------------------------
    def _grey(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray:
        """Grey artefacts (same shift in R, G, B): brightness gradient and stitching stripes, (h, w)."""
        w0, h0 = self.size
        gx = (self.layout.gradient[0] * (xs / w0 - 0.5)).astype(np.float32)
        gy = (self.layout.gradient[1] * (ys / h0 - 0.5)).astype(np.float32)
        for axis, coords in (("x", xs), ("y", ys)):
            if axis in self.layout.stripes:
                period, phase, width, dark = self.layout.stripes[axis]
                k = np.arange(np.floor((coords[0] - phase) / period) - 1, np.floor((coords[-1] - phase) / period) + 2)
                centres = phase + k * period
                cov = interval_coverage(coords, d, centres - width / 2, centres + width / 2)
                if axis == "x":
                    gx -= np.float32(dark) * cov
                else:
                    gy -= np.float32(dark) * cov
        return gy[:, None] + gx[None, :]

    def _noise(self, x0: float, y0: float, d: float, w: int, h: int) -> np.ndarray:
        ix = (int(np.floor(x0 / d)) + np.arange(w)) % 256
        iy = (int(np.floor(y0 / d)) + np.arange(h)) % 256
        return _NOISE[np.ix_(iy, ix)] * np.float32(NOISE_SIGMA / max(d, 1.0))

    def _thickness(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        fx = sum(a * np.sin(xs / wl * 2 * np.pi + p) for wl, p, a in self._thick[:2])
        fy = sum(a * np.sin(ys / wl * 2 * np.pi + p) for wl, p, a in self._thick[2:])
        return (1.0 + fy[:, None] + fx[None, :]).astype(np.float32)

    def _sections(self, xs: np.ndarray, ys: np.ndarray, d: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Tissue coverage and fibrous-capsule coverage (the outer ``CAPSULE_UM`` of each section)."""
        inset = CAPSULE_UM / self.mpp
        tissue: np.ndarray | None = None
        capsule: np.ndarray | None = None
        for section in self.layout.sections:
            cov = section.coverage(xs, ys, d)
            if cov is None:
                continue
            inner = StarShape(section.cx, section.cy, np.maximum(section.radii - inset, 0.0)).coverage(xs, ys, d)
            rim = cov if inner is None else cov - inner
            tissue = cov if tissue is None else np.maximum(tissue, cov)
            capsule = rim if capsule is None else np.maximum(capsule, rim)
        return tissue, capsule

    @staticmethod
    def _union(shapes: list, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray | None:
        total: np.ndarray | None = None
        for shape in shapes:
            cov = shape.coverage(xs, ys, d)
            if cov is not None:
                total = cov if total is None else np.maximum(total, cov)
        return total

    def _channels(self, kind: str, salt: int, x0: float, y0: float, d: float, w: int, h: int) -> np.ndarray:
        """Texture channels ``(h, w, 4)`` at this pixel size, or their mean ``(4,)`` when coarser than the bank."""
        assert self.banks is not None
        bank = self.banks[kind]
        scale = int(d) if float(d).is_integer() else -1
        if scale in bank.pyramid:
            return fill(bank, scale, self.seed, salt, int(x0 // scale), int(y0 // scale), w, h)
        return bank.mean

    @staticmethod
    def _colour(channels: np.ndarray, colour: ClassColour) -> np.ndarray:
        if channels.ndim == 1:
            return channels @ colour.matrix + colour.base
        h, w, _ = channels.shape
        rgb = channels.reshape(-1, 4) @ colour.matrix
        rgb += colour.base
        return rgb.reshape(h, w, 3)

    # --- the region -------------------------------------------------------------------------------------
    def render(self, x0: float, y0: float, d: float, w: int, h: int) -> np.ndarray:
        """``uint8 (h, w, 3)`` RGB; pixels whose centre lies outside the slide are black."""
        xs = x0 + (np.arange(w) + 0.5) * d
        ys = y0 + (np.arange(h) + 0.5) * d
        colours = self.colours
        grey = self._grey(xs, ys, d) + self._noise(x0, y0, d, w, h)
        tissue_cov, capsule_cov = self._sections(xs, ys, d)
        out = np.empty((h, w, 3), np.float32)
        out[:] = colours.glass
        if tissue_cov is not None:
            tissue = self._tissue(x0, y0, d, w, h, xs, ys, capsule_cov)
            # glass + coverage * (tissue - glass): exact area mix at the tissue edge.
            tissue -= colours.glass
            tissue *= tissue_cov[..., None]
            out += tissue
        out += grey[..., None]
        for pen in self.layout.pens:
            cov = pen.band.coverage(xs, ys, d)
            if cov is not None:
                absorb = 1.0 - np.asarray(pen.transmission, np.float32)
                out *= 1.0 - (cov * np.float32(pen.opacity))[..., None] * absorb
        w0, h0 = self.size
        out[:, (xs < 0) | (xs >= w0)] = 0
        out[(ys < 0) | (ys >= h0)] = 0
        np.clip(out, 0, 255, out=out)
        return np.rint(out, out=out).astype(np.uint8)

    def _tissue(
        self,
        x0: float,
        y0: float,
        d: float,
        w: int,
        h: int,
        xs: np.ndarray,
        ys: np.ndarray,
        capsule_cov: np.ndarray | None,
    ) -> np.ndarray:
        classes = self.colours.classes
        channels = self._channels("normal", 0, x0, y0, d, w, h)
        tissue = np.broadcast_to(self._colour(channels, classes["normal"]), (h, w, 3)).astype(np.float32)
        follicle_cov = self._union(self.layout.follicles, xs, ys, d)
        if follicle_cov is not None:
            follicle = self._colour(channels, classes["follicle"]) - tissue
            tissue += follicle * follicle_cov[..., None]
        if capsule_cov is not None:
            tissue += (self.colours.capsule - tissue) * (0.85 * capsule_cov)[..., None]
        lesion_cov = self._union([lesion.shape for lesion in self.layout.lesions], xs, ys, d)
        if lesion_cov is not None:
            tumour = self._colour(self._channels("tumour", 1, x0, y0, d, w, h), classes["tumour"]) - tissue
            tissue += tumour * lesion_cov[..., None]
        fold_cov = self._union(self.layout.folds, xs, ys, d)
        if fold_cov is not None:
            tissue *= (1.0 - np.float32(1.0 - self.colours.fold_gain) * fold_cov)[..., None]
        tissue *= self._thickness(xs, ys)[..., None]
        return tissue
