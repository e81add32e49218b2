"""In-memory slides for the model tests (helpers, not tests)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from magnet.slides.tensor_source import TensorRegionSource

TISSUE = (0.85, 0.55, 0.70)  # a pinkish H&E-like colour


def smooth_image(height: int, width: int, seed: int = 0) -> Tensor:
    """A smooth colourful image (sums of a few low-frequency sinusoids), values in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    channels = []
    for _ in range(3):
        fx, fy, px, py = (torch.rand(4, generator=g) * torch.tensor([4.0, 4.0, 6.28, 6.28])).tolist()
        channels.append(
            0.5 + 0.2 * torch.sin(2 * math.pi * fx * x + px) * torch.cos(2 * math.pi * fy * y + py)
        )
    return torch.stack(channels).clamp(0.1, 0.9)


def textured_image(height: int, width: int, seed: int = 0) -> Tensor:
    """Smooth colour plus fine random texture at several scales: every region has gradients."""
    g = torch.Generator().manual_seed(seed)
    base = smooth_image(height, width, seed)
    fine = torch.rand(3, height, width, generator=g) - 0.5
    coarse = torch.nn.functional.interpolate(
        (torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=g) - 0.5),
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0]
    return (base + 0.15 * fine + 0.3 * coarse).clamp(0.0, 1.0)


def textured_source(height: int = 256, width: int = 192, seed: int = 0) -> TensorRegionSource:
    return TensorRegionSource(textured_image(height, width, seed))

SMALL_SIZES = dict(view_size=24, read_size=48, final_size=32, final_read_size=64, classifier_input_size=32)


def small_config(**overrides: object):  # type: ignore[no-untyped-def]
    """The ``tiny`` variant at test sizes (24 px views, 32 px final patches), with ``overrides``."""
    from magnet.models import model_config

    base: dict[str, object] = dict(SMALL_SIZES)
    base.update(overrides)
    return model_config("tiny", **base)


def parent_inputs(seed: int, batch: int = 2, parents: int = 2) -> tuple[Tensor, Tensor]:
    """Parent images I ``(batch, parents, 3, 24, 24)`` and reads I' ``(batch, parents, 3, 48, 48)``."""
    images = torch.stack([textured_image(24, 24, seed=seed + i) for i in range(batch * parents)])
    reads = torch.stack([textured_image(48, 48, seed=seed + 100 + i) for i in range(batch * parents)])
    return images.view(batch, parents, 3, 24, 24), reads.view(batch, parents, 3, 48, 48)


def lesion_pair(size: int, radius: int, seed: int, cell: int = 2) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """A (negative, positive) pair of slides that differ only by one lesion, and the lesion's centre.

    Tissue: a constant colour with a faint smooth variation. Lesion: a disk filled with a bright checker of
    ``cell`` x ``cell`` squares (white / dark) whose mean equals the tissue colour, so a view coarse enough to
    average many cells (the 56 px root view of a 512 px slide) shows almost nothing of it, while finer views
    show high-contrast texture.
    """
    g = torch.Generator().manual_seed(seed)
    tissue = torch.tensor(TISSUE).view(3, 1, 1)
    negative = (tissue + 0.05 * (smooth_image(size, size, seed) - 0.5)).clamp(0, 1)
    margin = radius + 4
    cy, cx = (torch.randint(margin, size - margin, (2,), generator=g)).tolist()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2
    checker = (((yy // cell) + (xx // cell)) % 2).bool()
    bright = torch.ones(3, 1, 1)
    dark = 2 * negative - bright  # mean of bright and dark = the tissue pixel
    positive = negative.clone()
    positive = torch.where(disk & checker, bright.expand_as(positive), positive)
    positive = torch.where(disk & ~checker, dark, positive)
    return negative, positive.clamp(0, 1), (cx, cy)
