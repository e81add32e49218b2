"""The white band under the ROI map: the slide's name, a scale bar and the legend, so the picture reads alone.

``rois.png`` travels without its page (into slide records, slides of talks, papers), so what it needs to be
read is in the picture, and under the map rather than on it: a legend drawn over the thumbnail hid tissue
and boxes. Top to bottom: the slide's name, the scale bar with its length, one legend entry per layer
(``legend.LayerKey.describe``). Text is wrapped to the figure's width, so a narrow thumbnail
(``--thumbnail-size 256``) gets a taller band rather than text cut at its edge; the band's height is known
before drawing (``band_layout``), since the figure is sized from it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from magnet.explain.legend import LayerKey
from magnet.explain.scale_bar import scale_bar

__all__ = ["BandLayout", "band_layout", "draw_band"]

ROW_PX = 17  # one line of band text at FONT_SIZE, with its spacing
MARGIN_PX = 12
FONT_SIZE = 8.5
CHAR_PX = 6.6  # a generous average character width of DejaVu Sans at FONT_SIZE and 100 dpi
HANDLE_PX = 52  # a legend entry's line key and the gap after it
DASHES = {"solid": "solid", "dashed": (0, (4, 2))}


@dataclass(frozen=True)
class BandLayout:
    """The band's wrapped text and its height in pixels."""

    name_lines: list[str]
    legend_labels: list[str]  # one per layer, lines joined by newlines
    height_px: float


def band_layout(width_px: float, slide_name: str, keys: Sequence[LayerKey]) -> BandLayout:
    """Wrap the slide's name and the legend to ``width_px``; the band's height follows."""
    name_chars = max(10, int((width_px - 2 * MARGIN_PX) / CHAR_PX))
    legend_chars = max(10, int((width_px - HANDLE_PX - MARGIN_PX) / CHAR_PX))
    name_lines = textwrap.wrap(slide_name, name_chars, break_long_words=True) if slide_name else []
    labels = ["\n".join(textwrap.wrap(key.describe(), legend_chars)) for key in keys]
    rows = len(name_lines) + 1 + sum(label.count("\n") + 1 for label in labels)
    return BandLayout(name_lines, labels, ROW_PX * rows + MARGIN_PX)


def draw_band(
    fig: Figure,
    layout: BandLayout,
    x_range: tuple[float, float],
    keys: Sequence[LayerKey],
    mpp: tuple[float, float] | None,
) -> None:
    """Draw the band in the bottom ``layout.height_px`` of ``fig``, under a map whose x axis is ``x_range``.

    The band's x axis is the map's (same limits, same width), so the scale bar is in the map's scale; its y
    axis counts pixels down from the band's top.
    """
    band_px = layout.height_px
    band = fig.add_axes((0.0, 0.0, 1.0, band_px / (fig.get_figheight() * fig.dpi)))
    band.set_axis_off()
    x_lo, x_hi = x_range
    band.set_xlim(x_lo, x_hi)
    band.set_ylim(band_px, 0)
    margin = MARGIN_PX * (x_hi - x_lo) / (fig.get_figwidth() * fig.dpi)  # MARGIN_PX in level-0 pixels
    y = MARGIN_PX / 2 + ROW_PX / 2
    for line in layout.name_lines:
        band.text(x_lo + margin, y, line, fontsize=FONT_SIZE + 0.5, fontweight="bold", va="center", ha="left")
        y += ROW_PX
    length, label = scale_bar(x_hi - x_lo, mpp)
    band.plot([x_lo + margin, x_lo + margin + length], [y, y], color="black", linewidth=4,
              solid_capstyle="butt")
    band.text(x_lo + 1.6 * margin + length, y, f"{label} (scale bar)", fontsize=FONT_SIZE, va="center",
              ha="left")
    y += ROW_PX / 2
    if not keys:
        return
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=k.colour, linewidth=k.line_width,
                         linestyle=DASHES[k.line_style]) for k in keys]
    left = MARGIN_PX / (fig.get_figwidth() * fig.dpi)
    band.legend(handles, layout.legend_labels, loc="upper left", frameon=False, fontsize=FONT_SIZE,
                bbox_to_anchor=(left, 1.0 - y / band_px), borderaxespad=0.0, borderpad=0.3, handlelength=2.4,
                labelspacing=0.35)
