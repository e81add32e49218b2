"""What each magnifying layer's boxes are, in words a pathologist reads: the legend of figure and page.

One ``LayerKey`` per layer: its colour and line style (as drawn by ``figures.draw_rois``), how many regions it
chose, their typical side in pixels and µm and, for the final layer, the resolution at which the model read
its patches (side in µm over the patch's pixels). The figure's legend and the HTML legend are both made from
these keys, so the two never disagree with each other or with the boxes drawn.

The side is the median over the layer's boxes: within a layer boxes differ by a few percent (the learned zoom
can stretch them), and one number per layer is what a reader compares with a lesion's size.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from magnet.explain.palette import layer_hex

__all__ = ["LayerKey", "format_length", "format_resolution", "layer_keys", "layer_line_style"]

Box = Sequence[float]


@dataclass(frozen=True)
class LayerKey:
    """How one layer is drawn and what its regions are (see the module docstring)."""

    layer: int  # 1-based
    colour: str  # "#rrggbb"
    line_style: str  # "solid" or "dashed", as drawn
    line_width: float  # points, as drawn
    count: int
    side_px: float  # median side in level-0 pixels
    side_um: float | None  # None when the slide states no µm per pixel
    final: bool
    read_um_per_px: float | None = None  # final layer: µm per pixel of the patches the classifier read

    @property
    def role(self) -> str:
        """The layer's part in the zoom, in words."""
        if self.final and self.layer == 1:
            return "final patches (one zoom from the whole-slide view)"
        if self.final:
            return "final patches, the classifier reads these"
        if self.layer == 1:
            return "first zoom from the whole-slide view"
        return f"zoom into the layer {self.layer - 1} regions"

    def size_text(self) -> str:
        """``221 µm (885 px) a side, read at 2 µm/px`` (the resolution for the final layer only)."""
        pixels = f"{self.side_px:.0f} px"
        text = f"{format_length(self.side_um)} ({pixels}) a side" if self.side_um else f"{pixels} a side"
        if self.read_um_per_px:
            text += f", read at {format_resolution(self.read_um_per_px)}"
        return text

    def describe(self) -> str:
        """One line: ``layer 3, final patches...: 27 regions, 221 µm (885 px) a side, read at 2 µm/px``."""
        regions = f"{self.count} region{'s' * (self.count != 1)}"
        return f"layer {self.layer}, {self.role}: {regions}, {self.size_text()}"


def layer_line_style(layer: int, n_layers: int) -> tuple[str, float]:
    """``(style, width in points)`` of a layer's boxes: the first and final layers solid, the ones between
    dashed (so that a parent's colour shows through the gaps where a child's box lies on it); deeper layers
    thinner, and never under 2 points, so that the final boxes stay visible on a 1024-pixel thumbnail."""
    style = "solid" if layer in (1, n_layers) else "dashed"
    return style, max(2.0, 4.0 * 0.7 ** (layer - 1))


def format_length(um: float) -> str:
    """A length as a pathologist writes it: ``850 µm``, ``1 mm``, ``2.5 mm``, ``12 mm`` (mm from 1 mm up)."""
    if um >= 1000:
        mm = um / 1000
        return f"{mm:.1f}".removesuffix(".0") + " mm" if mm < 10 else f"{mm:.0f} mm"
    return f"{um:.0f} µm" if um >= 10 else f"{um:.1f}".removesuffix(".0") + " µm"


def format_resolution(um_per_px: float) -> str:
    """µm per pixel, two significant digits, never in exponent form: ``0.25``, ``2.1``, ``27``, ``128``."""
    return f"{um_per_px:.0f} µm/px" if um_per_px >= 10 else f"{um_per_px:.2g} µm/px"


def layer_keys(
    boxes_per_layer: Sequence[Sequence[Box]],
    mpp: tuple[float, float] | None,
    final_patch_pixels: int | None = None,
) -> list[LayerKey]:
    """The legend of ``boxes_per_layer`` (level-0 boxes per layer), sizes in µm when ``mpp`` is known.

    ``final_patch_pixels``: the side in pixels of the final patches the classifier read
    (``model.final_size``), which gives the final layer's reading resolution.
    """
    n_layers = len(boxes_per_layer)
    um_per_px = (mpp[0] + mpp[1]) / 2 if mpp else None
    keys = []
    for layer, boxes in enumerate(boxes_per_layer, start=1):
        sides = [max(b[2] - b[0], b[3] - b[1]) for b in boxes] or [0.0]
        side_px = float(statistics.median(sides))
        side_um = side_px * um_per_px if um_per_px else None
        final = layer == n_layers
        read = side_um / final_patch_pixels if final and side_um and final_patch_pixels else None
        style, width = layer_line_style(layer, n_layers)
        keys.append(LayerKey(layer=layer, colour=layer_hex(layer), line_style=style, line_width=width,
                             count=len(boxes), side_px=side_px, side_um=side_um, final=final,
                             read_um_per_px=read))
    return keys
