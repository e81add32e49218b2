"""Pixel conversions shared by every backend: anything a file holds becomes RGB ``uint8``.

- Greyscale (2-D or one channel) is repeated to three channels.
- Grey + alpha and RGBA are composited onto black: transparent areas (outside the scanned region, the
  padding OpenSlide returns) become black, as docs/method.md §1 asks.
- 16-bit and other integer types are scaled by their type's maximum; floats are taken as ``[0, 1]`` when
  their maximum is at most 1, else as ``[0, 255]``.

The grey filter of the paper (§4.2, docs/method.md §2.8) also lives here: pixels whose
``max(R, G, B) - min(R, G, B)`` is below a threshold (15 on the 0–255 scale) are glass, background or grey
scanner artefacts and become black: ``grey_mask`` / ``blacken_grey`` / ``grey_filter`` on numpy uint8
images, ``tissue_mask_tensor`` / ``grey_filter_tensor`` on float tensors, one threshold for both.
"""

from __future__ import annotations

import numpy as np
import torch

#: Paper §4.2: a pixel whose ``max - min`` channel spread is below this (0–255 scale) is glass or background.
#: The one threshold of every grey test: numpy on uint8 images, torch on float images (divided by 255).
GREY_THRESHOLD = 15


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
    # Composite onto black: colour * alpha. Skipped where every pixel is opaque (a slide read inside its
    # scanned area, most reads), where it changes nothing: the 16-bit arithmetic was as slow as the decode.
    if channels in (2, 4) and not (arr[:, :, -1] == 255).all():
        alpha = arr[:, :, -1:].astype(np.uint16)
        rgb = ((rgb.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


# --- the grey test (paper §4.2): numpy on uint8 images, torch on float images in [0, 1] ----------------


def _spread(rgb: np.ndarray, channel_axis: int) -> np.ndarray:
    """``max(R, G, B) - min(R, G, B)`` of a uint8 image, channels along ``channel_axis``.

    Element-wise ``maximum``/``minimum`` of the three channel planes, not numpy's reduction over a length-3
    axis: ~10x faster, which matters in the reader (the reduction held the GIL for a third of a 448-pixel
    read). On uint8 the difference is never negative.
    """
    r, g, b = np.moveaxis(rgb, channel_axis, 0)
    return np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)


def grey_mask(rgb: np.ndarray, threshold: int = GREY_THRESHOLD, *, channel_axis: int = -1) -> np.ndarray:
    """Boolean mask of the grey pixels (``max - min < threshold``) of an RGB ``uint8`` image ``(H, W, 3)``
    (``(3, H, W)`` with ``channel_axis=0``); the mask has the image's shape without the channel axis."""
    return _spread(rgb, channel_axis) < threshold


def blacken_grey(rgb: np.ndarray, threshold: int = GREY_THRESHOLD, *, channel_axis: int = -1) -> None:
    """In place on an RGB ``uint8`` image: grey pixels (``grey_mask``) become black (paper §4.2)."""
    rgb *= np.expand_dims(_spread(rgb, channel_axis) >= threshold, channel_axis)


def grey_filter(rgb: np.ndarray, threshold: int = GREY_THRESHOLD) -> np.ndarray:
    """A copy of an RGB ``uint8`` image ``(H, W, 3)`` with grey pixels set to black (paper §4.2)."""
    out = rgb.copy()
    blacken_grey(out, threshold)
    return out


def tissue_mask_tensor(images: torch.Tensor, threshold: float = GREY_THRESHOLD) -> torch.Tensor:
    """The pixels the grey filter keeps (``max - min >= threshold / 255``) of float images ``(..., 3, H, W)``
    in ``[0, 1]``, as a bool ``(..., H, W)``; ``threshold`` is on the 0–255 scale, as everywhere."""
    spread = images.amax(dim=-3) - images.amin(dim=-3)
    return spread >= threshold / 255.0


def grey_filter_tensor(images: torch.Tensor, threshold: float = GREY_THRESHOLD) -> torch.Tensor:
    """Float images ``(..., 3, H, W)`` in ``[0, 1]`` with grey pixels set to black (paper §4.2)."""
    return images * tissue_mask_tensor(images, threshold).unsqueeze(-3).to(images.dtype)
