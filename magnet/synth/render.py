"""Render any region of a virtual slide at any pixel size, from its layout, stain and texture banks.

A region is ``w x h`` pixels of ``d`` level-0 pixels each, top-left corner at level-0 ``(x0, y0)``; pixel
``(i, j)`` covers level-0 ``[x0 + j*d, x0 + (j+1)*d) x [y0 + i*d, y0 + (i+1)*d)``. Every field is evaluated
at pixel centres with edges anti-aliased to ``d`` (see shapes.py), and textures come from the bank level of
the same scale or, coarser than the bank, from its mean (textures.py). So a coarse region is the area
average of level 0 in mean colour without rendering level 0. All maths is vectorised numpy
(float32); the only Python loops run over shapes and texture blocks touching the region, strips of a
layer's window and colour channels (pixels.py: numpy is slow with a 3-wide innermost axis).

Compositing, back to front: glass -> tissue (normal parenchyma, paler follicles, fibrous capsule at the
edge, lesions of carcinoma, darker folds, slow staining-thickness variation) -> grey scanner artefacts
(brightness gradient, stitching stripes, sensor noise) -> translucent pen ink.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import numpy as np

from magnet.synth.layout import Layout
from magnet.synth.pixels import add_colour, add_weight, colour_minus, filled, scale_by, subtract_colour
from magnet.synth.shapes import Window, interval_coverage, merge_windows, union, union_window
from magnet.synth.stain import ClassColour, SlideColours
from magnet.synth.textures import TextureBank, fill, fill_arrays

CAPSULE_UM = 20.0  # thickness of the fibrous capsule drawn along the tissue edge
CAPSULE_OPACITY = 0.6  # the capsule is mixed over the parenchyma texture, which still shows through
BLEND_STRIP = 64  # rows of a layer's window cropped to their covered pixels at a time (_blend_texture)
PRECOLOUR_FROM = 16  # bank scale from which banks are coloured once per slide (see _texture)
NOISE_SIGMA = 2.5  # grey levels of sensor noise at level 0 (averages down as 1/d)
_NOISE = np.random.default_rng(99).standard_normal((256, 256)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> object | None:
    try:  # shipped with scikit-learn, a dependency
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


_BLAS_LIMIT = threading.local()  # .held: this thread is inside _one_blas_thread


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the tiny colour matmuls on one BLAS thread: on a shared 2-core machine a multi-threaded BLAS
    spin-waits for a busy core and a 0.7 ms product takes 10-50 ms (measured). Re-entering costs nothing
    (setting the limit costs about 70 us, and a region colours a dozen textures)."""
    controller = _blas_controller()
    if controller is None or getattr(_BLAS_LIMIT, "held", False):
        yield
        return
    with controller.limit(limits=1, user_api="blas"):  # type: ignore[attr-defined]
        _BLAS_LIMIT.held = True
        try:
            yield
        finally:
            _BLAS_LIMIT.held = False


def _covered_box(cov: np.ndarray) -> tuple[int, int, int, int] | None:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` bounding the nonzero pixels of ``cov``; None if all are 0.

    Never a single pixel out of more: numpy colours one row of channels with a matrix-vector product,
    whose rounding may differ from the matrix product that colours two or more rows (``Renderer._colour``;
    for two or more, every row comes out the same whatever the other rows, checked on this BLAS)."""
    covered_rows = np.flatnonzero(cov.any(axis=1))
    if covered_rows.size == 0:
        return None
    covered_cols = np.flatnonzero(cov.any(axis=0))
    r0, r1 = int(covered_rows[0]), int(covered_rows[-1]) + 1
    c0, c1 = int(covered_cols[0]), int(covered_cols[-1]) + 1
    if (r1 - r0) * (c1 - c0) == 1 and cov.size > 1:
        if cov.shape[1] > 1:
            c0, c1 = (c0, c1 + 1) if c1 < cov.shape[1] else (c0 - 1, c1)
        else:
            r0, r1 = (r0, r1 + 1) if r1 < cov.shape[0] else (r0 - 1, r1)
    return r0, r1, c0, c1


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
        self._capsule_px = CAPSULE_UM / mpp
        self._coloured: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}
        rng = np.random.default_rng([seed, 8])
        # Section thickness: a slow wave along each axis (wavelengths 4-12 mm), each up to +-3 % brightness;
        # their product keeps the field rank one, so it costs one outer product per region.
        self._waves = [
            (2 * np.pi * mpp / rng.uniform(4000, 12000), rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.03))
            for _ in range(2)
        ]

    # --- fields -----------------------------------------------------------------------------------------
    def _grey(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray:
        """Grey artefacts (same shift in R, G, B): brightness gradient and stitching stripes, (h, w)."""
        w0, h0 = self.size
        gx = (self.layout.gradient[0] * (xs / w0 - 0.5)).astype(np.float32)
        gy = (self.layout.gradient[1] * (ys / h0 - 0.5)).astype(np.float32)
        for axis, coords in (("x", xs), ("y", ys)):
            if axis in self.layout.stripes:
                period, phase, width, dark = self.layout.stripes[axis]
                k = np.arange(
                    np.floor((coords[0] - phase) / period) - 1, np.floor((coords[-1] - phase) / period) + 2
                )
                centres = phase + k * period
                cov = interval_coverage(coords, d, centres - width / 2, centres + width / 2)
                if axis == "x":
                    gx -= np.float32(dark) * cov
                else:
                    gy -= np.float32(dark) * cov
        return gy[:, None] + gx[None, :]

    def _noise(self, x0: float, y0: float, d: float, w: int, h: int) -> np.ndarray:
        ix = int(np.floor(x0 / d)) + np.arange(w)
        iy = int(np.floor(y0 / d)) + np.arange(h)
        tile = _NOISE[iy % 256][:, ix % 256]
        tile *= np.float32(NOISE_SIGMA / max(d, 1.0))
        return tile

    def _thickness(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        (kx, px, ax), (ky, py, ay) = self._waves
        fx = (1.0 + ax * np.sin(kx * xs + px)).astype(np.float32)
        fy = (1.0 + ay * np.sin(ky * ys + py)).astype(np.float32)
        return fy[:, None] * fx[None, :]

    def _folds_and_thickness(
        self, tissue: np.ndarray, xs: np.ndarray, ys: np.ndarray, d: float
    ) -> np.ndarray:
        """Darken ``tissue`` (in place) under folds (two layers of section) and by the staining thickness."""
        folds = union_window(self.layout.folds, xs, ys, d)
        if folds is not None:
            rows, cols, cov = folds
            scale_by(tissue[rows, cols], 1.0 - np.float32(1.0 - self.colours.fold_gain) * cov)
        return scale_by(tissue, self._thickness(xs, ys))

    def _on_glass(self, tissue: np.ndarray, tissue_cov: np.ndarray, grey: np.ndarray) -> np.ndarray:
        """``glass + coverage * (tissue - glass)`` (the exact area mix at the section's edge), plus the grey
        artefacts (in place)."""
        if tissue_cov.min() < 1.0:
            glass = self.colours.glass
            subtract_colour(tissue, glass)
            scale_by(tissue, tissue_cov)
            add_colour(tissue, glass)
        return add_weight(tissue, grey)

    def _sections(self, xs: np.ndarray, ys: np.ndarray, d: float) -> tuple[np.ndarray | None, Window | None]:
        """Tissue coverage and the window of fibrous-capsule coverage (the outer ``CAPSULE_UM``)."""
        tissue: np.ndarray | None = None
        rims: list[Window] = []
        for section in self.layout.sections:
            hit = section.window_with_rim(xs, ys, d, self._capsule_px)
            if hit is None:
                continue
            rows, cols, cov, rim = hit
            if tissue is None:
                tissue = np.zeros((len(ys), len(xs)), np.float32)
            np.maximum(tissue[rows, cols], cov, out=tissue[rows, cols])
            if rim is not None:
                rims.append((rows, cols, rim))
        return tissue, merge_windows(rims)

    def _blend_texture(
        self, tissue: np.ndarray, hit: Window | None, kind: str, colour: str, salt: int,
        x0: float, y0: float, d: float,
    ) -> None:
        """Blend bank ``kind`` in ``colour`` into ``tissue`` (in place) by the coverage of window ``hit``.

        Only the covered pixels' bounding box within each strip of ``BLEND_STRIP`` rows is textured and
        blended: a layer's window is often the box of a thin band (the subcapsular sinus of a node crossing
        the region), and where the coverage is 0, ``part + (texture - part) * 0`` is ``part`` exactly
        (finite colours). A box's texture equals the window's over the same pixels: texture blocks are placed
        by their bank-pixel coordinates on the slide (textures.py), not relative to the region drawn."""
        if hit is None:
            return
        rows, cols, cov = hit
        scale = int(d)
        px0, py0 = int((x0 + cols.start * d) // scale), int((y0 + rows.start * d) // scale)
        # A one-column window stays whole: a strip of one pixel would be coloured as one row (_covered_box).
        strip_rows = BLEND_STRIP if cov.shape[1] > 1 else cov.shape[0]
        for top in range(0, cov.shape[0], strip_rows):
            strip = cov[top : top + strip_rows]
            box = _covered_box(strip)
            if box is None:
                continue
            r0, r1, c0, c1 = box
            w, h = c1 - c0, r1 - r0
            texture = self._bank_texture(kind, colour, salt, scale, px0 + c0, py0 + top + r0, w, h)
            part = tissue[rows.start + top + r0 : rows.start + top + r1, cols.start + c0 : cols.start + c1]
            part += scale_by(texture - part, strip[r0:r1, c0:c1])

    def _texture(
        self, kind: str, colour: str, salt: int, x0: float, y0: float, d: float, w: int, h: int
    ) -> np.ndarray:
        """RGB ``(h, w, 3)`` of bank ``kind`` in class colour ``colour`` at a bank scale ``d``."""
        scale = int(d)
        return self._bank_texture(kind, colour, salt, scale, int(x0 // scale), int(y0 // scale), w, h)

    def _bank_texture(
        self, kind: str, colour: str, salt: int, scale: int, px0: int, py0: int, w: int, h: int
    ) -> np.ndarray:
        """``_texture`` from bank pixel ``(px0, py0)`` of pyramid level ``scale``.

        At scales >= ``PRECOLOUR_FROM`` a region holds hundreds of small blocks, so the (small) bank is
        coloured once per slide and blocks are copied as RGB; finer, blocks are copied as channels and the
        region is coloured after (the level-0 bank is too large to keep coloured per slide)."""
        assert self.banks is not None
        bank = self.banks[kind]
        if scale >= PRECOLOUR_FROM and scale in bank.variants:
            key = (kind, colour, scale)
            if key not in self._coloured:
                cc = self.colours.classes[colour]
                self._coloured[key] = (
                    self._colour(bank.pyramid[scale], cc),
                    self._colour(bank.variants[scale], cc),
                )
            patches, variants = self._coloured[key]
            return fill_arrays(patches, variants, bank.blend, self.seed, salt, px0, py0, w, h)
        channels = fill(bank, scale, self.seed, salt, px0, py0, w, h)
        return self._colour(channels, self.colours.classes[colour])

    @staticmethod
    def _colour(channels: np.ndarray, colour: ClassColour) -> np.ndarray:
        """``base + channels @ matrix`` for channels ``(..., 4)`` (float32 out)."""
        if channels.ndim == 1:
            return channels @ colour.matrix + colour.base
        with _one_blas_thread():
            rgb = channels.reshape(-1, 4).astype(np.float32, copy=False) @ colour.matrix
        return add_colour(rgb.reshape(*channels.shape[:-1], 3), colour.base)

    # --- the region -------------------------------------------------------------------------------------
    def render(self, x0: float, y0: float, d: float, w: int, h: int) -> np.ndarray:
        """``uint8 (h, w, 3)`` RGB; pixels whose centre lies outside the slide are black."""
        with _one_blas_thread():  # once for all the colour products of the region
            return self._render(x0, y0, d, w, h)

    def _render(self, x0: float, y0: float, d: float, w: int, h: int) -> np.ndarray:
        xs = x0 + (np.arange(w) + 0.5) * d
        ys = y0 + (np.arange(h) + 0.5) * d
        glass = self.colours.glass
        tissue_cov, capsule = self._sections(xs, ys, d)
        grey = self._grey(xs, ys, d) + self._noise(x0, y0, d, w, h)
        grey += 0.5  # so that the final truncation to uint8 rounds
        assert self.banks is not None
        if tissue_cov is None:
            out = add_weight(filled((h, w, 3), glass.astype(np.float32)), grey)
        elif d > max(self.banks["normal"].scales):
            out = self._flat(xs, ys, d, tissue_cov, capsule, grey)
        else:
            out = self._on_glass(self._tissue(x0, y0, d, w, h, xs, ys, capsule), tissue_cov, grey)
        for pen in self.layout.pens:
            hit = pen.band.window(xs, ys, d)
            if hit is not None:
                rows, cols, cov = hit
                absorb = 1.0 - np.asarray(pen.transmission, np.float32)
                out[rows, cols] *= 1.0 - (cov * np.float32(pen.opacity))[..., None] * absorb
        w0, h0 = self.size
        outside_x, outside_y = (xs < 0) | (xs >= w0), (ys < 0) | (ys >= h0)
        if outside_x.any():
            out[:, outside_x] = 0
        if outside_y.any():
            out[outside_y] = 0
        np.clip(out, 0, 255.0, out=out)
        return out.astype(np.uint8)

    def _flat(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        d: float,
        tissue_cov: np.ndarray,
        capsule: Window | None,
        grey: np.ndarray,
    ) -> np.ndarray:
        """Coarser than the texture banks every class has one (mean) colour: the same compositing as
        ``render`` + ``_tissue``, expanded into per-pixel weights of a few colours and done as one product."""
        assert self.banks is not None
        classes = self.colours.classes
        flow = self._thickness(xs, ys) * tissue_cov  # weight of the tissue colour that reaches the pixel
        folds = union(self.layout.folds, xs, ys, d)
        if folds is not None:
            flow *= 1.0 - np.float32(1.0 - self.colours.fold_gain) * folds
        weights: list[np.ndarray] = [1.0 - tissue_cov, grey]
        colours: list[np.ndarray] = [self.colours.glass, np.ones(3, np.float32)]
        lesions = union([lesion.shape for lesion in self.layout.lesions], xs, ys, d)
        if lesions is not None:
            weights.append(lesions * flow)
            colours.append(self._colour(self.banks["tumour"].mean, classes["tumour"]))
            flow = flow - weights[-1]
        if capsule is not None:
            capsule_cov = np.zeros_like(flow)
            capsule_cov[capsule[0], capsule[1]] = capsule[2]
            weights.append(CAPSULE_OPACITY * capsule_cov * flow)
            colours.append(self.colours.capsule)
            flow = flow - weights[-1]
        normal_mean = self.banks["normal"].mean
        follicles = union(self.layout.follicles, xs, ys, d)
        if follicles is not None:
            weights.append(follicles * flow)
            colours.append(self._colour(normal_mean, classes["follicle"]))
            flow = flow - weights[-1]
        weights.append(flow)
        colours.append(self._colour(normal_mean, classes["normal"]))
        stacked = np.stack(weights, -1)
        with _one_blas_thread():
            return stacked @ np.stack(colours).astype(np.float32)

    def _tissue(
        self,
        x0: float,
        y0: float,
        d: float,
        w: int,
        h: int,
        xs: np.ndarray,
        ys: np.ndarray,
        capsule: Window | None,
    ) -> np.ndarray:
        tissue = self._texture("normal", "normal", 0, x0, y0, d, w, h)
        # Follicles: the same blocks (salt 0) in follicle colours.
        self._blend_texture(tissue, union_window(self.layout.follicles, xs, ys, d), "normal", "follicle", 0,
                            x0, y0, d)
        if capsule is not None:
            rows, cols, cov = capsule
            part = tissue[rows, cols]
            part += scale_by(colour_minus(self.colours.capsule, part), CAPSULE_OPACITY * cov)
        lesions = union_window([lesion.shape for lesion in self.layout.lesions], xs, ys, d)
        self._blend_texture(tissue, lesions, "tumour", "tumour", 1, x0, y0, d)
        return self._folds_and_thickness(tissue, xs, ys, d)
