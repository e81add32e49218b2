"""Numbers on the final boxes of the ROI figure, placed so that they neither cover the boxes nor each other.

The final patches of one parent lie close together (often touching or overlapping), and a number written in
each box's corner hid the box and ran into its siblings' numbers: on a 1024-pixel thumbnail a 200 µm patch
is about 10 pixels, smaller than its label. So each label goes next to its box, at the first free place of a
fixed list (above, below, left, right of the box, at its corners), free meaning that it overlaps no final
box and no label placed before it; where none is free, the place that overlaps least. Placement is greedy
in patch order, in display pixels, with the text's real size from the Agg renderer.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import RendererAgg

__all__ = ["label_text_colour", "place_box_labels"]

Rect = tuple[float, float, float, float]  # display pixels: x0, y0, x1, y1 with y0 < y1 (y up)

FONT_SIZE = 8.0
PAD_POINTS = 1.2


def label_text_colour(background_hex: str) -> str:
    """Black or white, whichever reads better on ``background_hex`` (WCAG relative luminance)."""
    channels = [int(background_hex[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Contrast with black (L + 0.05) / 0.05 against with white 1.05 / (L + 0.05): equal at L = 0.179.
    return "black" if luminance > 0.179 else "white"


def _overlap(a: Rect, b: Rect) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _candidates(box: Rect, w: float, h: float) -> list[Rect]:
    """Label rectangles of size ``w x h`` around ``box``, in order of preference (outside first, touching)."""
    x0, y0, x1, y1 = box
    spots = [
        (x0, y1), (x1 - w, y1),  # above: left-aligned, right-aligned
        (x0, y0 - h), (x1 - w, y0 - h),  # below
        (x0 - w, y1 - h), (x1, y1 - h),  # beside, top-aligned: left, right
        (x0 - w, y0), (x1, y0),  # beside, bottom-aligned
        (x0 - w, y1), (x1, y1), (x0 - w, y0 - h), (x1, y0 - h),  # diagonal corners
        (x0, y1 - h),  # inside the top-left corner: the old place, the last resort
    ]
    return [(sx, sy, sx + w, sy + h) for sx, sy in spots]


def place_box_labels(
    ax: Axes,
    renderer: RendererAgg,
    boxes: Sequence[Sequence[float]],
    colour: str,
) -> list[Rect]:
    """Write 1, 2, ... next to each data-coordinate ``box`` of ``ax`` (see the module docstring).

    Returns each label's rectangle in display pixels, in box order, background pad included.
    """
    to_display = ax.transData
    to_data = ax.transData.inverted()
    frame = ax.get_window_extent(renderer)
    bounds: Rect = (frame.x0, frame.y0, frame.x1, frame.y1)
    box_rects: list[Rect] = []
    for x0, y0, x1, y1 in boxes:
        (ax0, ay0), (ax1, ay1) = to_display.transform([(x0, y0), (x1, y1)])
        box_rects.append((min(ax0, ax1), min(ay0, ay1), max(ax0, ax1), max(ay0, ay1)))
    pad = PAD_POINTS * ax.figure.dpi / 72
    placed: list[Rect] = []
    text_colour = label_text_colour(colour)
    for number, box in enumerate(box_rects, start=1):
        text = ax.text(0, 0, str(number), color=text_colour, fontsize=FONT_SIZE, fontweight="bold",
                       ha="left", va="bottom", zorder=10,
                       bbox={"facecolor": colour, "edgecolor": "none", "pad": PAD_POINTS})
        extent = text.get_window_extent(renderer)
        w, h = extent.width + 2 * pad, extent.height + 2 * pad
        best: tuple[float, Rect] | None = None
        for rect in _candidates(box, w, h):
            outside = (rect[2] - rect[0]) * (rect[3] - rect[1]) - _overlap(rect, bounds)
            cost = 4 * outside + sum(_overlap(rect, other) for other in box_rects + placed)
            if best is None or cost < best[0]:
                best = (cost, rect)
            if cost == 0:
                break
        assert best is not None
        rect = best[1]
        placed.append(rect)
        text.set_position(tuple(to_data.transform((rect[0] + pad, rect[1] + pad))))
    return placed
