"""One colour per magnifying layer, shared by the ROI figure, the GeoJSON and the HTML table.

[choice] Colours that stand out on H&E (pink and purple tissue, white background): blue, green, orange,
cyan, red, olive, grey, brown (from matplotlib's "tab10", its pinks and purples left out). Layers beyond
eight reuse them in order.
"""

from __future__ import annotations

LAYER_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (44, 160, 44),
    (255, 127, 14),
    (23, 190, 207),
    (214, 39, 40),
    (188, 189, 34),
    (127, 127, 127),
    (140, 86, 75),
)


def layer_colour(layer: int) -> tuple[int, int, int]:
    """RGB (0-255) of magnifying layer ``layer`` (1-based)."""
    return LAYER_COLOURS[(layer - 1) % len(LAYER_COLOURS)]


def layer_hex(layer: int) -> str:
    """``#rrggbb`` of ``layer_colour(layer)``."""
    r, g, b = layer_colour(layer)
    return f"#{r:02x}{g:02x}{b:02x}"
