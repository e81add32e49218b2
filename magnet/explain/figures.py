"""The two figures of an explanation: where the model zoomed, and what it saw (paper §3, Figure 5).

- ``draw_rois``: the slide thumbnail with the ROI boxes of every magnifying layer, one colour per layer
  (``magnet.explain.palette``) and a legend; the final layer's boxes carry their patch number, so they can be
  matched with the patch figure. The thumbnail is drawn with ``extent`` set to the slide's level-0 size, so
  the level-0 boxes are drawn in level-0 coordinates and matplotlib scales them to the thumbnail (per axis:
  the thumbnail's rounding can make x and y scales differ slightly). The view takes in every box whole.
- ``draw_patch_strip``: the final patches in depth-first order (the order the classifier's GRU reads them),
  each titled with its number and the slide probability after it (the running probability of Figure 5),
  and below them the running probability as a curve.

Patch numbers shown to people are 1-based; ``index`` in the GeoJSON is 0-based (number - 1).
No pyplot: a ``Figure`` with its own Agg canvas touches no global state and needs no display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from magnet.atomic import atomic_path
from magnet.explain.palette import layer_hex

__all__ = ["draw_rois", "draw_patch_strip"]

# [choice] Number the final boxes on the thumbnail only up to this many: beyond, the labels hide the tissue.
MAX_NUMBERED_BOXES = 64
DPI = 100


def draw_rois(
    path: str | os.PathLike[str],
    thumbnail: np.ndarray,
    slide_size: tuple[int, int],
    boxes_per_layer: Sequence[Sequence[Sequence[float]]],
) -> None:
    """PNG of ``thumbnail`` (RGB uint8, the whole slide) with every layer's level-0 boxes drawn on it.

    The view is the union of the slide and every box, so that boxes reaching beyond the slide (into the
    canvas padding, or beyond it with a zoom ``s > 1``) are seen whole; outside the slide is grey, the
    slide's edge a dashed line. The figure's longer side is the thumbnail's.
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
    fig = Figure(figsize=((x_hi - x_lo) * scale / DPI, (y_hi - y_lo) * scale / DPI), dpi=DPI,
                 facecolor="#d9d9d9")  # the figure's face: the axes' own is hidden with the axis
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(thumbnail, extent=(0, w0, h0, 0), interpolation="antialiased")
    ax.add_patch(Rectangle((0, 0), w0, h0, fill=False, edgecolor="black", linestyle="--", linewidth=0.8))
    n_layers = len(boxes_per_layer)
    for layer, boxes in enumerate(boxes_per_layer, start=1):
        colour = layer_hex(layer)
        # Deeper layers: thinner lines, drawn on top. A child box can coincide with its parent's (a zoom
        # s = 1 with no shift): the parent's wider line still shows around it, and intermediate layers are
        # dashed so that the colour beneath shows through the gaps. The final layer is solid.
        width = max(1.0, 4.0 * 0.65 ** (layer - 1))
        style = "solid" if layer in (1, n_layers) else (0, (4, 2))
        for number, (x0, y0, x1, y1) in enumerate(boxes, start=1):
            label = f"layer {layer} ({len(boxes)} ROIs)" if number == 1 else None
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                   linewidth=width, linestyle=style, label=label))
            if layer == n_layers and len(boxes) <= MAX_NUMBERED_BOXES:
                ax.text(x0, y0, str(number), color="white", fontsize=7, va="top", ha="left",
                        bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0})
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_hi, y_lo)
    ax.set_axis_off()
    if n_layers:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


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
) -> None:
    """PNG of the final ``patches`` ``(N, 3, S, S)`` in [0, 1], each titled ``#k p=...``, plus the curve."""
    n = int(patches.shape[0])
    if len(running_probabilities) != n:
        raise ValueError(f"{n} patches but {len(running_probabilities)} running probabilities")
    cols = max(1, _grid_columns(n))
    rows = max(1, math.ceil(n / cols))
    cell = 1.6  # inches per patch
    fig = Figure(figsize=(max(cols * cell, 4.0), rows * (cell + 0.25) + 1.6), dpi=DPI)
    FigureCanvasAgg(fig)
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
    curve.plot(steps, list(running_probabilities), marker="o", markersize=3, color=colour)
    curve.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    curve.set_ylim(-0.02, 1.02)
    curve.set_xlim(0.5, n + 0.5)
    curve.set_xlabel("final patch (depth-first order)", fontsize=8)
    curve.set_ylabel("running p", fontsize=8)
    curve.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
