"""Gaussian blur and the low-pass gradient path for theta ([choice], not the paper; docs/method.md §9).

The gradient of a sampled patch with respect to its sampling grid is the local slope of the image it samples
from (bilinear: the 4 neighbouring pixels; linearized multi-sampling: a plane fitted to ~1-2 pixels around
each sample, docs/method.md §3). At the resolutions a MagNet reads, that slope follows cell-scale texture, not
the lesion-scale signal the zoom should follow (docs/method.md §7). :func:`low_pass_gradient` keeps the
forward value of the sharp sample and takes the gradient from the same grid sampled on a blurred image: a
straight-through estimator, value = sharp, d/dgrid = d/dgrid of the blurred sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_blur", "low_pass_gradient"]


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with std ``sigma`` pixels, zeros outside (black canvas).

    The kernel spans +-3 sigma; ``sigma <= 0`` returns the input.
    """
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(images, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(out, vertical, padding=(radius, 0), groups=channels)


def low_pass_gradient(sharp: Tensor, smooth: Tensor) -> Tensor:
    """The value of ``sharp`` with the gradient of ``smooth`` (both samples of one grid; ``sharp`` may be
    computed without gradient). MagNet's I' is a detached read, so only the grid's gradient changes.
    """
    return smooth + (sharp - smooth).detach()
