"""The scale bar of the ROI figure: a round length (1, 2 or 5 times a power of ten) a reader can count with.

Without one, a thumbnail of a 8 mm slide and of a 25 mm slide look alike, and a box's size says nothing about
what fits in it. Lengths are in µm when the slide states its µm per pixel, else in level-0 pixels.
"""

from __future__ import annotations

import math

from magnet.explain.legend import format_length

__all__ = ["round_length", "scale_bar"]


def round_length(limit: float) -> float:
    """The largest of 1, 2, 5 x 10^k that is at most ``limit`` (``limit`` > 0)."""
    if not limit > 0 or math.isinf(limit):
        raise ValueError(f"limit must be a finite number > 0, got {limit}")
    power = 10.0 ** math.floor(math.log10(limit))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= limit * (1 + 1e-9))


def scale_bar(
    view_width_px: float, mpp: tuple[float, float] | None, fraction: float = 0.2
) -> tuple[float, str]:
    """``(length in level-0 pixels, label)`` of a bar about ``fraction`` of ``view_width_px`` long, or less.

    With ``mpp`` the length is a round number of µm (``"2 mm"``); without, a round number of pixels, said so.
    """
    if mpp:
        um_per_px = mpp[0]
        length_um = round_length(view_width_px * fraction * um_per_px)
        return length_um / um_per_px, format_length(length_um)
    length_px = round_length(view_width_px * fraction)
    return length_px, f"{length_px:,.0f} px (no µm/px in the file)"
