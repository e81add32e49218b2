"""Validation of ``read_region`` arguments, shared by every backend.

The libraries behind the backends answer bad arguments in their own ways (OpenSlide returns a transparent
image for a level out of range, tiffslide pads with zeros and warns, ``int(nan)`` raises ``ValueError``), so
each backend checks its arguments here first and every mistake becomes the same one-line ``SlideError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from magnet.errors import SlideError

# A single read above this many pixels (3 GiB of RGB) is almost surely a unit mistake (level-0 size asked at
# level 0 of a gigapixel slide); refusing it beats a MemoryError deep inside a C library. Our choice.
MAX_REGION_PIXELS = 1 << 30


def _pair(path: str, name: str, value: object) -> tuple[float, float]:
    # Tuples, lists and numpy arrays of two numbers are accepted.
    items = list(value) if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str) else []
    if len(items) != 2:
        raise SlideError(path, f"region {name} must be a pair (x, y), got {value!r}")
    out = []
    for v in items:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise SlideError(path, f"region {name} must hold numbers, got {value!r}")
        if not math.isfinite(float(v)):
            raise SlideError(path, f"region {name} must be finite, got {float(v)}")
        out.append(float(v))
    return out[0], out[1]


def check_read_args(
    path: str,
    location: object,
    level: object,
    size: object,
    level_count: int,
) -> tuple[int, int, int, int, int]:
    """Validated ``(x, y, level, width, height)`` of a ``read_region`` call, or a ``SlideError``.

    ``location`` (level-0 pixels) may be any finite numbers, floored to whole pixels; negative and
    outside values are fine (the read is black there). ``size`` must be positive whole numbers of pixels
    and ``level`` an integer in ``0..level_count-1``.
    """
    if not isinstance(level, numbers.Integral) or isinstance(level, bool):
        raise SlideError(path, f"level must be an integer, got {level!r}")
    if not 0 <= int(level) < level_count:
        raise SlideError(path, f"level {level} out of range 0..{level_count - 1}")
    x, y = _pair(path, "location", location)
    w, h = _pair(path, "size", size)
    if w <= 0 or h <= 0:
        raise SlideError(path, f"region size must be positive, got {w:g}x{h:g}")
    if w != int(w) or h != int(h):
        raise SlideError(path, f"region size must be whole pixels, got {w:g}x{h:g}")
    if w * h > MAX_REGION_PIXELS:
        raise SlideError(path, f"region {w:g}x{h:g} is larger than {MAX_REGION_PIXELS} pixels")
    return math.floor(x), math.floor(y), int(level), int(w), int(h)
