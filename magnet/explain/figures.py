"""The two figures of an explanation: where the model zoomed, and what it saw (paper §3, Figure 5).

- ``draw_rois``: the slide thumbnail with the ROI boxes of every magnifying layer, one colour per layer
  (``magnet.explain.palette``), and under it the slide's name, a scale bar and a legend; the final layer's
  boxes carry their patch number beside them (``box_labels``), so they can be matched with the patch
  figure. The thumbnail is drawn with ``extent`` set to the slide's level-0 size, so the level-0 boxes are
  drawn in level-0 coordinates and matplotlib scales them to the thumbnail (per axis: the thumbnail's
  rounding can make x and y scales differ slightly). The view takes in every box whole.
- ``draw_patch_strip``: the final patches in depth-first order (the order the classifier's GRU reads them),
  each titled with its number and the slide probability after it (the running probability of Figure 5),
  and below them the running probability as a curve; a caption says what a patch covers and what p is.

Patch numbers shown to people are 1-based; ``index`` in the GeoJSON is 0-based (number - 1).
No pyplot: a ``Figure`` with its own Agg canvas touches no global state and needs no display.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from magnet.atomic import atomic_path
from magnet.explain.box_labels import place_box_labels
from magnet.explain.legend import LayerKey, format_length, format_resolution, layer_keys
from magnet.explain.palette import layer_hex
from magnet.explain.roi_band import DASHES, band_layout, draw_band

__all__ = ["draw_rois", "draw_patch_strip"]

# [choice] Number the final boxes on the thumbnail only up to this many: beyond, the labels hide the tissue.
MAX_NUMBERED_BOXES = 64
DPI = 100
OUTSIDE_GREY = "#d9d9d9"
CAPTION_CHAR_PX = 6.8  # a generous average character width of the 9-point caption at DPI


def draw_rois(
    path: str | os.PathLike[str],
    thumbnail: np.ndarray,
    slide_size: tuple[int, int],
    boxes_per_layer: Sequence[Sequence[Sequence[float]]],
    *,
    mpp: tuple[float, float] | None = None,
    final_patch_pixels: int | None = None,
    slide_name: str = "",
) -> None:
    """PNG of ``thumbnail`` (RGB uint8, the whole slide) with every layer's level-0 boxes drawn on it.

    The view is the union of the slide and every box, so that boxes reaching beyond the slide (into the
    canvas padding, or beyond it with a zoom ``s > 1``) are seen whole; outside the slide is grey, the
    slide's edge a dashed line. The map's longer side is the thumbnail's. Below the map, on white, a band
    holds what the picture needs to be read alone (it is also copied into slides' records and papers): the
    slide's name, a scale bar (``mpp``: in µm) and the legend, one line per layer (``legend.layer_keys``).
    Nothing is drawn over the tissue but the boxes and their numbers.
    """
    th, tw = thumbnail.shape[:2]
    w0, h0 = slide_size
    flat = [box for boxes in boxes_per_layer for box in boxes]
    x_lo = min([0.0] + [b[0] for b in flat])
    y_lo = min([0.0] + [b[1] for b in flat])
    x_hi = max([float(w0)] + [b[2] for b in flat])
    y_hi = max([float(h0)] + [b[3] for b in flat])
    # A 2% margin, so that lines on the view's edge are drawn whole.
    pad = 0.02 * max(x_hi - x_lo, y_hi - y_lo)
    x_lo, y_lo, x_hi, y_hi = x_lo - pad, y_lo - pad, x_hi + pad, y_hi + pad
    # Figure pixels per level-0 pixel: the union's longer side gets the thumbnail's longer side.
    scale = max(tw, th, 200) / max(x_hi - x_lo, y_hi - y_lo)
    map_w, map_h = (x_hi - x_lo) * scale, (y_hi - y_lo) * scale
    keys = layer_keys(boxes_per_layer, mpp, final_patch_pixels)
    band = band_layout(map_w, slide_name, keys)
    band_h = band.height_px
    fig_h = map_h + band_h
    fig = Figure(figsize=(map_w / DPI, fig_h / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, band_h / fig_h, 1.0, map_h / fig_h))
    # Outside the slide: grey (the axes' own face is hidden with the axis).
    ax.add_patch(Rectangle((x_lo, y_lo), x_hi - x_lo, y_hi - y_lo, facecolor=OUTSIDE_GREY, edgecolor="none",
                           zorder=0))
    ax.imshow(thumbnail, extent=(0, w0, h0, 0), interpolation="antialiased", zorder=1)
    ax.add_patch(Rectangle((0, 0), w0, h0, fill=False, edgecolor="black", linestyle="--", linewidth=0.8,
                           zorder=2))
    n_layers = len(boxes_per_layer)
    for key, boxes in zip(keys, boxes_per_layer, strict=True):
        # Deeper layers: thinner lines, drawn on top. A child box can coincide with its parent's (a zoom
        # s = 1 with no shift): the parent's wider line still shows around it, and intermediate layers are
        # dashed so that the colour beneath shows through the gaps. A thin white edge on every line keeps
        # it visible on dark tissue, pen marks and other boxes alike.
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=key.colour,
                                   linewidth=key.line_width, linestyle=DASHES[key.line_style],
                                   zorder=3 + key.layer, path_effects=_halo(key.line_width)))
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_hi, y_lo)
    ax.set_axis_off()
    if n_layers and len(boxes_per_layer[-1]) <= MAX_NUMBERED_BOXES:
        place_box_labels(ax, canvas.get_renderer(), boxes_per_layer[-1], layer_hex(n_layers))
    draw_band(fig, band, (x_lo, x_hi), keys, mpp)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _halo(line_width: float) -> list[patheffects.AbstractPathEffect]:
    edge = patheffects.Stroke(linewidth=line_width + 1.5, foreground="white", alpha=0.8)
    return [edge, patheffects.Normal()]


def _grid_columns(n: int) -> int:
    """Up to 8 patches in one row; larger sets in a near-square grid at most 16 wide."""
    return n if n <= 8 else min(16, max(8, math.ceil(math.sqrt(n))))


def _arrow(before: float | None, after: float) -> str:
    """An up/down arrow when a patch moved the probability by more than 0.01 (up: towards "tumour")."""
    if before is None or abs(after - before) <= 0.01:
        return ""
    return "\u2191" if after > before else "\u2193"


def draw_patch_strip(
    path: str | os.PathLike[str],
    patches: torch.Tensor,
    running_probabilities: Sequence[float],
    *,
    layer: int,
    key: LayerKey | None = None,
    slide_name: str = "",
) -> None:
    """PNG of the final ``patches`` ``(N, 3, S, S)`` in [0, 1], each titled ``#k p=...``, plus the curve.

    A caption on top names the slide and says what a patch covers (``key``: its side in µm and the resolution
    it was read at) and what ``p`` is, so that the picture reads alone; the curve's 0.5 line is labelled as a
    reference, since no decision threshold comes with a model.
    """
    n = int(patches.shape[0])
    if len(running_probabilities) != n:
        raise ValueError(f"{n} patches but {len(running_probabilities)} running probabilities")
    cols = max(1, _grid_columns(n))
    rows = max(1, math.ceil(n / cols))
    cell = 1.6  # inches per patch
    fig_w = max(cols * cell, 6.0)
    caption = _strip_caption(n, layer, key, slide_name, chars=int(fig_w * DPI / CAPTION_CHAR_PX))
    caption_h = 0.1 + 0.17 * (caption.count("\n") + 1)  # inches: 9-point lines
    fig_h = rows * (cell + 0.25) + 1.6 + caption_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.text(0.01, 1 - 0.06 / fig_h, caption, fontsize=9, va="top", ha="left")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[cell + 0.25] * rows + [1.3])
    images = patches.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    colour = layer_hex(layer)
    previous: float | None = None  # the first patch has no probability before it to compare with
    for k in range(n):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(images[k], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2)
        p = float(running_probabilities[k])
        ax.set_title(f"#{k + 1}  p={p:.3f}{_arrow(previous, p)}", fontsize=9)
        previous = p
    curve = fig.add_subplot(grid[rows, :])
    steps = np.arange(1, n + 1)
    curve.plot(steps, list(running_probabilities), marker="o", markersize=3, color=colour,
               label="tumour probability after patch k")
    curve.axhline(0.5, color="grey", linestyle=":", linewidth=1,
                  label="0.5, for reference (no threshold set)")
    curve.set_ylim(-0.02, 1.02)
    curve.set_xlim(0.5, n + 0.5)
    if n <= 32:
        curve.set_xticks(steps)
    curve.set_xlabel("final patch k (depth-first order, as the classifier reads them)", fontsize=8)
    curve.set_ylabel("p after patch k", fontsize=8)
    curve.tick_params(labelsize=7)
    curve.legend(loc="best", fontsize=7, framealpha=0.85)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - caption_h / fig_h))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _strip_caption(n: int, layer: int, key: LayerKey | None, slide_name: str, *, chars: int) -> str:
    """The lines over the patch strip, wrapped to ``chars``: what the patches are, and what ``p`` is."""
    first = f"The {n} final patches (layer {layer})"
    if slide_name:
        first += f" of {slide_name}"
    if key is not None and key.side_um:
        first += f", each {format_length(key.side_um)} a side"
        if key.read_um_per_px:
            first += f", read at {format_resolution(key.read_um_per_px)}"
    elif key is not None:
        first += f", each {key.side_px:.0f} px a side (level 0)"
    second = ("p: the model's tumour probability for the slide after reading patches 1 to k "
              "(not calibrated); after the last patch, the slide's probability")
    lines = textwrap.wrap(f"{first}.", chars, break_long_words=True) + textwrap.wrap(f"{second}.", chars)
    return "\n".join(lines)
