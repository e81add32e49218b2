"""Tissue pixels of a view and strips that share its tissue [choice, docs/method.md §9, "tissue strips"].

Equal strips give each head of a parent the same width of the parent's view; where a strip holds only glass
its box lands on glass (docs/BENCHMARKS.md: 12 of 27 final boxes of an ITC slide). Tissue strips place the
strips' edges at the quantiles of the view's tissue mass along the cut axis instead, so each of K heads gets
about 1/K of the tissue.

The tissue rule is the grey filter's (paper §4.2): a pixel is tissue when its spread max(RGB) - min(RGB)
reaches a threshold on the 0-255 scale. Glass and background are near grey and the canvas is black (spread
0), so none of them passes; with the grey filter on, the reader has already set them to black. The rule is
restated here (not imported from ``magnet.slides``) because the model only sees tensors; it carries no
gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["quantile_strip_edges", "tissue_pixels", "tissue_strip_masks"]


def tissue_pixels(images: Tensor, threshold: float) -> Tensor:
    """Bool ``(..., H, W)``: the pixels of images ``(..., 3, H, W)`` in [0, 1] whose spread
    max(RGB) - min(RGB) is at least ``threshold / 255``."""
    images = images.detach().float()
    return (images.amax(dim=-3) - images.amin(dim=-3)) >= threshold / 255.0


def quantile_strip_edges(profile: Tensor, num_strips: int) -> Tensor:
    """Edges ``(N, num_strips + 1)`` (long, column indices) of strips along each row of ``profile``
    ``(N, V)``, the tissue mass per column.

    Strip k is columns [e_k, e_{k+1}). e_0 and e_K are the first and one past the last column with tissue;
    an inner edge e_k is the number of columns whose middle lies before the k/K quantile of the mass (a
    column goes to the strip that holds most of it). Every strip keeps at least one column (needs
    V >= num_strips); a row without tissue gets equal strips over the whole width.
    """
    count, size = profile.shape
    if num_strips > size:
        raise ValueError(f"{num_strips} strips do not fit a map of {size} columns")
    profile = profile.float()
    total = profile.sum(dim=-1, keepdim=True)  # (N, 1)
    middle = profile.cumsum(dim=-1) - profile / 2  # mass before the middle of each column
    fractions = torch.arange(1, num_strips, device=profile.device, dtype=profile.dtype) / num_strips
    targets = fractions * total  # (N, K - 1)
    inner = (middle.unsqueeze(1) < targets.unsqueeze(-1)).sum(dim=-1)  # (N, K - 1)
    has = profile > 0
    first = has.float().argmax(dim=-1, keepdim=True)
    last = size - has.flip(-1).float().argmax(dim=-1, keepdim=True)  # one past the last tissue column
    edges = torch.cat([first, inner, last], dim=-1)
    # At least one column per strip: push edges right, then pull them back inside the map.
    for k in range(1, num_strips + 1):
        edges[:, k] = torch.maximum(edges[:, k], edges[:, k - 1] + 1)
    edges[:, num_strips] = edges[:, num_strips].clamp(max=size)
    for k in range(num_strips - 1, -1, -1):
        edges[:, k] = torch.minimum(edges[:, k], edges[:, k + 1] - 1)
    equal = torch.tensor([round(k * size / num_strips) for k in range(num_strips + 1)], device=profile.device)
    return torch.where(total > 0, edges, equal.expand(count, -1))


def _extent(occupied: Tensor) -> tuple[Tensor, Tensor]:
    """First index and one past the last where ``occupied`` ``(..., V)`` is True (0 and 0 where none)."""
    size = occupied.shape[-1]
    first = occupied.float().argmax(dim=-1)
    stop = size - occupied.flip(-1).float().argmax(dim=-1)
    none = ~occupied.any(dim=-1)
    return first.masked_fill(none, 0), stop.masked_fill(none, 0)


def tissue_strip_masks(tissue: Tensor, num_strips: int, along_x: bool) -> Tensor:
    """Bool ``(..., num_strips, V, V)``: each strip of tissue maps ``(..., V, V)``, cut along x (columns) or
    along y (rows).

    Along the cut the edges are ``quantile_strip_edges`` of the tissue per column (row). Across it, a strip
    is trimmed to the rows (columns) that hold its own tissue, so a flat map on it is centred on tissue, not
    on the glass above or below; a strip without tissue of its own takes the view's tissue rows, and a view
    without tissue gets equal full-length strips. The masks are disjoint, non-empty and cover every tissue
    pixel.
    """
    size = tissue.shape[-1]
    cut = tissue if along_x else tissue.transpose(-1, -2)  # strips are column ranges of ``cut``
    lead = cut.shape[:-2]
    cut = cut.reshape(-1, size, size)
    edges = quantile_strip_edges(cut.sum(dim=-2), num_strips)  # (N, K + 1)
    index = torch.arange(size, device=tissue.device)
    columns = (index >= edges[:, :-1, None]) & (index < edges[:, 1:, None])  # (N, K, V)
    own_rows = (cut.unsqueeze(1) & columns.unsqueeze(-2)).any(dim=-1)  # (N, K, V): rows of the strip's tissue
    view_rows = cut.any(dim=-1).unsqueeze(1).expand_as(own_rows)  # (N, K, V)
    blank_view = ~view_rows.any(dim=-1, keepdim=True)
    rows = torch.where(own_rows.any(dim=-1, keepdim=True), own_rows, view_rows) | blank_view
    start, stop = _extent(rows)
    row_span = (index >= start.unsqueeze(-1)) & (index < stop.unsqueeze(-1))  # (N, K, V)
    masks = row_span.unsqueeze(-1) & columns.unsqueeze(-2)  # (N, K, V rows, V columns)
    masks = masks.view(*lead, num_strips, size, size)
    return masks if along_x else masks.transpose(-1, -2)
