"""Pixel conversions shared by every backend: anything a file holds becomes RGB ``uint8``.

- Greyscale (2-D or one channel) is repeated to three channels.
- Grey + alpha and RGBA are composited onto black: transparent areas (outside the scanned region, the
  padding OpenSlide returns) become black, as METHOD.md §1 asks.
- 16-bit and other integer types are scaled by their type's maximum; floats are taken as ``[0, 1]`` when
  their maximum is at most 1, else as ``[0, 255]``.

The grey filter of the paper (§4.2, METHOD.md §2.8) also lives here: pixels whose
``max(R, G, B) - min(R, G, B)`` is below a threshold (15 on the 0–255 scale) are glass, background or grey
scanner artefacts and become black.
"""

from __future__ import annotations

import numpy as np

GREY_THRESHOLD = 15  # paper §4.2: max−min below this on 0–255 is background


def _to_unit_range_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = float(np.iinfo(arr.dtype).max)
        return np.clip(np.rint(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    data = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if data.size and data.max() <= 1.0:
        data = data * 255.0
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)


def to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    """Convert an image array ``(H, W)`` or ``(H, W, C)``, C in 1..4, of any dtype to RGB ``uint8``."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"cannot convert an image of shape {arr.shape} to RGB")
    arr = _to_unit_range_uint8(arr)
    channels = arr.shape[2]
    if channels in (1, 2):
        rgb = np.repeat(arr[:, :, :1], 3, axis=2)
    else:
        rgb = arr[:, :, :3]
    if channels in (2, 4):  # composite onto black: colour * alpha
        alpha = arr[:, :, -1:].astype(np.uint16)
        rgb = ((rgb.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def grey_mask(rgb: np.ndarray, threshold: int = GREY_THRESHOLD) -> np.ndarray:
    """Boolean ``(H, W)`` mask of grey pixels (``max - min < threshold``) of an RGB ``uint8`` image."""
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    return spread < threshold


def grey_filter(rgb: np.ndarray, threshold: int = GREY_THRESHOLD) -> np.ndarray:
    """A copy of ``rgb`` with grey pixels set to black (paper §4.2)."""
    out = rgb.copy()
    out[grey_mask(rgb, threshold)] = 0
    return out
