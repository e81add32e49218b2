"""In-place arithmetic on RGB images ``(..., w, 3)`` with a per-channel colour or a per-pixel weight.

numpy broadcasts ``image * weight[..., None]`` or ``image + colour`` with the channel axis (3 values) as its
innermost loop, which costs several times the arithmetic itself on a region of half a megapixel. These do
the same operation on every element, in the same dtypes, with long inner loops instead: a colour tiled
along a row of ``w * 3`` values, a weight applied channel by channel. The results are identical to the
element, since each element still gets one IEEE operation of the same operands.
"""

from __future__ import annotations

import math

import numpy as np


def _row_view(image: np.ndarray) -> np.ndarray:
    """``image`` ``(..., w, 3)`` as 2-D rows of ``w * 3`` values, without a copy (writes go through)."""
    return image.reshape(math.prod(image.shape[:-2]), image.shape[-2] * image.shape[-1], copy=False)


def _tiled(colour: np.ndarray, width: int) -> np.ndarray:
    """``colour`` repeated along a row of ``width`` pixels, as ``_row_view`` lays a row out."""
    return np.tile(colour, width)


def add_colour(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``image += colour`` (in place)."""
    rows = _row_view(image)
    np.add(rows, _tiled(colour, image.shape[-2]), out=rows)
    return image


def subtract_colour(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``image -= colour`` (in place)."""
    rows = _row_view(image)
    np.subtract(rows, _tiled(colour, image.shape[-2]), out=rows)
    return image


def colour_minus(colour: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``colour - image`` (a new array)."""
    out = np.empty(image.shape, np.result_type(colour, image))
    np.subtract(_tiled(colour, image.shape[-2]), _row_view(image), out=_row_view(out))
    return out


def filled(shape: tuple[int, ...], colour: np.ndarray) -> np.ndarray:
    """A new image of ``shape`` ``(..., w, 3)`` in one colour (``colour``'s dtype)."""
    out = np.empty(shape, colour.dtype)
    _row_view(out)[:] = _tiled(colour, shape[-2])
    return out


def _each_channel(operation: np.ufunc, image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``image[..., c] = operation(image[..., c], weight)`` for every channel c (in place)."""
    for channel in range(image.shape[-1]):
        plane = image[..., channel]
        operation(plane, weight, out=plane)
    return image


def scale_by(image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``image *= weight[..., None]`` (in place)."""
    return _each_channel(np.multiply, image, weight)


def add_outer(image: np.ndarray, weight: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``image += weight[..., None] * colour`` (in place)."""
    for channel in range(image.shape[-1]):
        plane = image[..., channel]
        plane += weight * colour[channel]
    return image


def add_weight(image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``image += weight[..., None]`` (in place): the same value in every channel."""
    return _each_channel(np.add, image, weight)
