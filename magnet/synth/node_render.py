"""Render a version-2 slide: the version-1 renderer with the node's compartments as texture layers.

Glass, scanner artefacts, pen, folds, staining thickness, anti-aliasing and the level-consistency rules are
version 1's (render.py). The tissue is the nodes plus perinodal and hilar fat, composited back to front:
paracortex -> fat (outside the node and in the hilum) -> medulla -> subcapsular sinus -> follicle mantles ->
germinal centres -> vessels -> sinus histiocytes -> large cells -> capsule -> lesions. Each layer is one
bank in one compartment colour (node_colours.py) blended by its coverage; coarser than the banks every
layer takes its bank's mean colour, the same compositing with flat colours, so a coarse level is still the
area average of level 0 in mean colour.
"""

from __future__ import annotations

import threading

import numpy as np

from magnet.synth.anatomy import SINUS_UM, NodeLayout
from magnet.synth.nests import NEST_CONTRAST, NestPattern, mottled_shapes
from magnet.synth.node_colours import bank_of, node_colours
from magnet.synth.pixels import add_outer, colour_minus, scale_by
from magnet.synth.render import CAPSULE_OPACITY, CAPSULE_UM, Renderer
from magnet.synth.shapes import TWO_PI, StarShape, Window, merge_windows, union_window
from magnet.synth.stain import SlideColours
from magnet.synth.textures import TextureBank

SPLAT_BELOW = 0.5  # shapes with a radius under this many pixels are drawn as their area (see _windows)
# Salts of the texture placement hash, one per layer, so that layers of one bank do not repeat each other.
_SALTS = {
    "paracortex": 0,
    "tumour": 1,
    "mantle": 2,
    "germinal": 3,
    "medulla": 4,
    "sinus": 5,
    "fat": 6,
    "vessel": 7,
    "histiocyte": 8,
    "large_cells": 9,
}
# Layers of many shapes placed apart (anatomy.py keeps a margin between them; only a lesion's lymphoid rim may
# touch a follicle's mantle), blended one shape at a time: where two edges overlap, blending in turn gives
# 1 - (1 - a)(1 - b) of the layer instead of max(a, b), in the same texture.
APART = ("mantle", "germinal", "histiocyte", "large_cells")


class NodeRenderer(Renderer):
    """Pixels of one version-2 slide. Colours are made when the banks arrive (the look-alikes' colours
    are matched to the carcinoma's through the banks' means)."""

    layout: NodeLayout

    def __init__(
        self, seed: int, size: tuple[int, int], mpp: float, layout: NodeLayout, texture: str
    ) -> None:
        self.texture = texture
        self.bank_of = bank_of(texture)
        self._banks: dict[str, TextureBank] | None = None
        self._sinus_px = (CAPSULE_UM + SINUS_UM) / mpp
        self._groups: dict[str, tuple[list[StarShape], np.ndarray]] = {}
        self._local = threading.local()  # node coverage and sinus of the region being rendered
        placeholder = SlideColours(np.zeros(3, np.float32), {}, np.zeros(3, np.float32), 1.0)
        super().__init__(seed, size, mpp, layout, placeholder)

    @property  # type: ignore[override]
    def banks(self) -> dict[str, TextureBank] | None:
        return self._banks

    @banks.setter
    def banks(self, banks: dict[str, TextureBank] | None) -> None:
        self._banks = banks
        if banks is not None:
            self.colours = node_colours(self.seed, self.texture, banks)
            self._coloured.clear()

    # --- fields -----------------------------------------------------------------------------------------
    def _group(self, name: str) -> tuple[list[StarShape], np.ndarray]:
        """The shapes of layer ``name`` and their ``(cx, cy, r_max, area)`` rows, computed once."""
        if name not in self._groups:
            layout = self.layout
            shapes = {
                "mantle": layout.mantles,
                "germinal": layout.of_kind("germinal_centre"),
                "vessel": layout.vessels,
                "histiocyte": layout.of_kind("histiocyte_cluster"),
                "large_cells": layout.of_kind("large_cells"),
            }[name]
            rows = [(s.cx, s.cy, s.r_max, 0.5 * float((s.radii**2).mean()) * TWO_PI) for s in shapes]
            self._groups[name] = (shapes, np.asarray(rows, np.float64).reshape(-1, 4))
        return self._groups[name]

    def _windows(self, name: str, xs: np.ndarray, ys: np.ndarray, d: float) -> list[Window]:
        """One coverage window per shape of layer ``name`` that touches the region.

        For shapes placed apart (``APART``) blending each window in turn is their union, and costs each
        shape's own area rather than the bounding box of all of them (a region at a coarse level holds
        dozens of follicles); ``_layers`` merges the others' windows first. Shapes smaller than half a pixel
        are splatted as their area onto the pixel holding their centre: exact in mean colour, and one
        vectorised step for hundreds of them in a whole-slide view."""
        shapes, rows = self._group(name)
        small = rows[:, 2] < SPLAT_BELOW * d  # a pixel of the splat may hold several: their summed area
        windows = (shape.window(xs, ys, d) for shape, tiny in zip(shapes, small, strict=True) if not tiny)
        hits = [hit for hit in windows if hit is not None]
        if small.any():
            col = np.floor((rows[small, 0] - (xs[0] - 0.5 * d)) / d).astype(np.int64)
            row = np.floor((rows[small, 1] - (ys[0] - 0.5 * d)) / d).astype(np.int64)
            keep = (col >= 0) & (col < len(xs)) & (row >= 0) & (row < len(ys))
            if keep.any():
                splat = np.zeros((len(ys), len(xs)), np.float32)
                np.add.at(splat, (row[keep], col[keep]), (rows[small, 3][keep] / (d * d)).astype(np.float32))
                r0, r1, c0, c1 = row[keep].min(), row[keep].max() + 1, col[keep].min(), col[keep].max() + 1
                window = np.minimum(splat[r0:r1, c0:c1], 1.0)
                hits.append((slice(int(r0), int(r1)), slice(int(c0), int(c1)), window))
        return hits

    def _sections(self, xs: np.ndarray, ys: np.ndarray, d: float) -> tuple[np.ndarray | None, Window | None]:
        """Tissue = nodes + fat outside them; the capsule window is the nodes' outer ``CAPSULE_UM``.

        One depth evaluation per node gives its coverage, capsule and subcapsular sinus; the node coverage
        and the sinus (and the fat windows) are kept, per thread, for ``_layers`` of the same region."""
        nodes: np.ndarray | None = None
        rims: list[Window] = []
        sinuses: list[Window] = []
        inv_d = np.float32(1.0 / d)
        for section in self.layout.sections:
            near = section._near(xs, ys, d)
            if near is None:
                continue
            rows, cols, sx, sy, corner_sq = near
            if nodes is None:
                nodes = np.zeros((len(ys), len(xs)), np.float32)
            if corner_sq < (section.r_min - self._sinus_px - d) ** 2:  # deep inside: no edge here
                nodes[rows, cols] = 1.0
                continue
            depth = section.depth(sx, sy, saturate=self._sinus_px + d) * inv_d + np.float32(0.5)
            cov = np.clip(depth, 0.0, 1.0)
            under_capsule = np.clip(depth - np.float32(self._capsule_px / d), 0.0, 1.0)
            under_sinus = np.clip(depth - np.float32(self._sinus_px / d), 0.0, 1.0)
            np.maximum(nodes[rows, cols], cov, out=nodes[rows, cols])
            rims.append((rows, cols, cov - under_capsule))
            sinuses.append((rows, cols, under_capsule - under_sinus))
        self._local.nodes, self._local.sinus = nodes, merge_windows(sinuses)
        tissue = None if nodes is None else nodes.copy()
        self._local.fat = union_window(self.layout.fat, xs, ys, d)
        self._local.hila = union_window(self.layout.hila, xs, ys, d)
        fat = merge_windows([w for w in (self._local.fat, self._local.hila) if w is not None])
        if fat is not None:
            if tissue is None:
                tissue = np.zeros((len(ys), len(xs)), np.float32)
            rows, cols, cov = fat
            np.maximum(tissue[rows, cols], cov, out=tissue[rows, cols])
        return tissue, merge_windows(rims)

    def _layers(self, xs: np.ndarray, ys: np.ndarray, d: float) -> list[tuple[str, list[Window], float]]:
        """(compartment, coverage windows, opacity) back to front, paracortex excluded (it is the base)."""
        layout = self.layout
        nodes: np.ndarray | None = self._local.nodes
        fat, hila = self._local.fat, self._local.hila
        if fat is not None and nodes is not None:  # perinodal fat only outside the node
            rows, cols, cov = fat
            fat = rows, cols, cov * (1.0 - nodes[rows, cols])
        fat = merge_windows([w for w in (fat, hila) if w is not None])
        medulla = union_window(layout.medullae, xs, ys, d)
        layers = [("fat", fat), ("medulla", medulla), ("sinus", self._local.sinus)]
        out = [(name, [] if window is None else [window], 1.0) for name, window in layers]
        for name in ("mantle", "germinal", "vessel", "histiocyte", "large_cells"):
            windows = self._windows(name, xs, ys, d)
            if name not in APART and len(windows) > 1:  # they may overlap: blend their union
                windows = [merged] if (merged := merge_windows(windows)) is not None else []
            out.append((name, windows, 1.0))
        return out

    def _mean(self, compartment: str) -> np.ndarray:
        assert self.banks is not None
        return self._colour(self.banks[self.bank_of[compartment]].mean, self.colours.classes[compartment])

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
        flat: bool = False,
    ) -> np.ndarray:
        """The tissue colour before glass, grey artefacts and pen: textured, or flat (bank means)."""
        if flat:
            tissue = np.empty((h, w, 3), np.float32)
            tissue[:] = self._mean("paracortex")
        else:
            tissue = self._texture("normal", "paracortex", 0, x0, y0, d, w, h)
        lesions = union_window([lesion.shape for lesion in self.layout.lesions], xs, ys, d)
        layers = self._layers(xs, ys, d)
        layers.append(("capsule", [] if capsule is None else [capsule], CAPSULE_OPACITY))
        layers.append(("tumour", [] if lesions is None else [lesions], 1.0))
        for name, hit, opacity in ((name, hit, opacity) for name, hits, opacity in layers for hit in hits):
            rows, cols, cov = hit
            if opacity != 1.0:
                cov = cov * np.float32(opacity)
            part = tissue[rows, cols]
            if name == "capsule":
                part += scale_by(colour_minus(self.colours.capsule, part), cov)
            elif flat:  # the whole window: where its coverage is 0 the blend leaves ``part`` exactly as it is
                part += scale_by(colour_minus(self._mean(name), part), cov)
            else:
                self._blend_texture(tissue, hit, self.bank_of[name], name, _SALTS[name], x0, y0, d)
        self._over_layers(tissue, xs, ys, d)
        return self._folds_and_thickness(tissue, xs, ys, d)

    def _over_layers(self, tissue: np.ndarray, xs: np.ndarray, ys: np.ndarray, d: float) -> None:
        """What a later version draws over the composited compartments (in place); nothing here."""

    def _flat(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        d: float,
        tissue_cov: np.ndarray,
        capsule: Window | None,
        grey: np.ndarray,
    ) -> np.ndarray:
        x0, y0 = float(xs[0] - 0.5 * d), float(ys[0] - 0.5 * d)
        tissue = self._tissue(x0, y0, d, len(xs), len(ys), xs, ys, capsule, flat=True)
        return self._on_glass(tissue, tissue_cov, grey)


class NestedNodeRenderer(NodeRenderer):
    """Pixels of one version-4 slide: version 3's, with the nest pattern of nests.py on the mottled lesions
    and look-alikes, toward the capsule's colour."""

    def __init__(
        self, seed: int, size: tuple[int, int], mpp: float, layout: NodeLayout, texture: str
    ) -> None:
        super().__init__(seed, size, mpp, layout, texture)
        self.nests = NestPattern.for_slide(seed, mpp)
        self.mottled = mottled_shapes(
            seed, [lesion.shape for lesion in layout.lesions], [item.shape for item in layout.lookalikes]
        )

    def _over_layers(self, tissue: np.ndarray, xs: np.ndarray, ys: np.ndarray, d: float) -> None:
        hit = union_window(self.mottled, xs, ys, d)
        if hit is None:
            return
        rows, cols, cov = hit
        towards = self.colours.capsule - self._mean("tumour")
        towards = (towards / np.linalg.norm(towards)).astype(np.float32)
        pattern = self.nests.field(xs[cols], ys[rows], d) * cov * np.float32(NEST_CONTRAST)
        add_outer(tissue[rows, cols], pattern, towards)
