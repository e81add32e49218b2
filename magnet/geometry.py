"""Canvas coordinates: the one frame in which every ROI of the model lives (docs/method.md §1).

Convention:
    - A slide of level-0 size ``W0 x H0`` sits centred on a black square canvas of side ``L = max(W0, H0)``
      (the paper's "resize, then pad symmetrically with black").
    - Normalised canvas coordinates ``u = (u_x, u_y)`` in ``[-1, 1]^2``; ``±1`` are the *outer edges* of the
      canvas (``align_corners=False``); x is width, y points down. They map to level-0 pixels by
      ``X = W0/2 + u_x * L/2``, ``Y = H0/2 + u_y * L/2``.
    - An ROI is a ``3x3`` matrix ``A`` mapping the output image's own normalised coordinates ``g`` in
      ``[-1, 1]^2`` to canvas coordinates ``u = A @ [g, 1]``. Without augmentation
      ``A = [[h, 0, cx], [0, h, cy], [0, 0, 1]]`` (centre ``c``, half-size ``h``); the root is the identity.
    - A child chosen with ``theta = (s, tx, ty)`` is
      ``A_child = A_parent @ [[s, 0, tx], [0, s, ty], [0, 0, 1]]`` (centre ``c + h*t``, half-size ``h*s``).
    - Augmentation by the 8 dihedral maps (flips, rotations by multiples of 90°) is folded into the root:
      ``A0 = D`` with ``D`` a signed permutation matrix. Every ROI then has linear part ``h * D``; the reader
      reads the axis-aligned box and permutes the output pixels by ``D``. Reported boxes stay in one frame.

Tensors of ROIs have shape ``(..., 3, 3)`` and dtype float32 or float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

#: Coordinates in either array type: the conversions return the type they are given.
Coords = TypeVar("Coords", torch.Tensor, np.ndarray)

# The 8 dihedral maps as 2x2 matrices acting on (x, y); index 0 is the identity.
# Order: identity, rot90, rot180, rot270, flip-x (mirror left-right), flip-y, transpose, anti-transpose.
_DIHEDRAL_2X2 = (
    ((1, 0), (0, 1)),
    ((0, -1), (1, 0)),
    ((-1, 0), (0, -1)),
    ((0, 1), (-1, 0)),
    ((-1, 0), (0, 1)),
    ((1, 0), (0, -1)),
    ((0, 1), (1, 0)),
    ((0, -1), (-1, 0)),
)
NUM_DIHEDRAL = len(_DIHEDRAL_2X2)


def dihedral_matrix(index: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``3x3`` canvas transform of dihedral map ``index`` (0..7); 0 is the identity."""
    if not 0 <= index < NUM_DIHEDRAL:
        raise ValueError(f"dihedral index must be in 0..7, got {index}")
    m = torch.eye(3, dtype=dtype)
    m[:2, :2] = torch.tensor(_DIHEDRAL_2X2[index], dtype=dtype)
    return m


def roi_matrix(cx: float, cy: float, half: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ROI ``[[h, 0, cx], [0, h, cy], [0, 0, 1]]`` in canvas coordinates."""
    return torch.tensor([[half, 0.0, cx], [0.0, half, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def theta_matrix(theta: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` tensor of ``(s, tx, ty)`` to ``(..., 3, 3)`` matrices ``[[s,0,tx],[0,s,ty],[0,0,1]]``."""
    s, tx, ty = theta.unbind(-1)
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    rows = [
        torch.stack([s, zero, tx], -1),
        torch.stack([zero, s, ty], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def compose(parent: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Child ROI ``A_parent @ T(theta)``; broadcasts over leading dimensions."""
    return parent @ theta_matrix(theta).to(parent.dtype)


def cell_centres(rows: int, columns: int) -> torch.Tensor:
    """The centres ``(rows * columns, 2)``, float64, of a box's ``rows x columns`` grid of cells as (x, y) in
    the box's own [-1, 1] frame, row-major: cell (i, j) at ``x = -1 + (2j + 1) / columns``, ``y = -1 +
    (2i + 1) / rows`` (columns run along x and rows along y, as in every read of the box)."""
    y = (torch.arange(rows, dtype=torch.float64) * 2 + 1) / rows - 1
    x = (torch.arange(columns, dtype=torch.float64) * 2 + 1) / columns - 1
    return torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1).reshape(-1, 2)


def roi_box_canvas(roi: torch.Tensor) -> torch.Tensor:
    """Axis-aligned canvas box ``(..., 4)`` = ``(u_x0, u_y0, u_x1, u_y1)`` covered by each ROI."""
    lin = roi[..., :2, :2]
    centre = roi[..., :2, 2]
    # Half extent along x and y of the image of the square [-1, 1]^2.
    half = lin.abs().sum(-1)
    return torch.cat([centre - half, centre + half], -1)


def box_sides(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """``(N,)`` side of each level-0 box ``(x0, y0, x1, y1)`` of ``boxes`` ``(N, 4)``, float64: the longer of
    its two sides (boxes are squares on the canvas; the max absorbs rounding that makes them differ)."""
    box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])  # type: ignore[no-any-return]


def canvas_side(slide_size: tuple[int, int]) -> int:
    """``L = max(W0, H0)``: the side of the square canvas in level-0 pixels (canvas units are ``L / 2``)."""
    w0, h0 = slide_size
    return max(w0, h0)


def _slide_centre(coords: Coords, slide_size: tuple[int, int]) -> Coords:
    """``(W0/2, H0/2)`` repeated for each ``(x, y)`` pair of ``coords``' last axis, in its array type."""
    pairs, odd = divmod(coords.shape[-1], 2)
    if odd or not pairs:
        raise ValueError(f"coordinates must be (x, y) pairs along the last axis, got {tuple(coords.shape)}")
    w0, h0 = slide_size
    values = [w0 / 2, h0 / 2] * pairs
    if isinstance(coords, torch.Tensor):
        return torch.tensor(values, dtype=coords.dtype, device=coords.device)
    return np.array(values, dtype=np.float64)


def canvas_to_level0(coords: Coords, slide_size: tuple[int, int]) -> Coords:
    """Canvas coordinates to level-0 pixels (float, unclipped): ``X = W0/2 + u_x L/2``, ``Y = H0/2 + u_y L/2``
    (``L = canvas_side``).

    ``coords`` is a tensor or numpy array of ``(x, y)`` pairs along its last axis: points ``(..., 2)`` or
    boxes ``(..., 4)`` = ``(x0, y0, x1, y1)``. The inverse is ``level0_to_canvas``.
    """
    return _slide_centre(coords, slide_size) + coords * (float(canvas_side(slide_size)) / 2)


def level0_to_canvas(coords: Coords, slide_size: tuple[int, int]) -> Coords:
    """Level-0 pixels to canvas coordinates, ``u = (X - W0/2, Y - H0/2) / (L/2)``: ``canvas_to_level0``'s
    inverse, on the same ``(x, y)`` pairs (points ``(..., 2)`` or boxes ``(..., 4)``)."""
    return (coords - _slide_centre(coords, slide_size)) / (float(canvas_side(slide_size)) / 2)


def roi_to_level0_box(roi: torch.Tensor, slide_size: tuple[int, int]) -> torch.Tensor:
    """Level-0 pixel box ``(..., 4)`` of each ROI."""
    return canvas_to_level0(roi_box_canvas(roi), slide_size)


@runtime_checkable
class RegionSource(Protocol):
    """What the model sees of one slide: pixels of canvas ROIs. The model never opens files.

    ``read(rois, size)`` takes ROIs ``(N, 3, 3)`` in canvas coordinates and returns a float32 tensor
    ``(N, 3, size, size)`` with values in ``[0, 1]`` (black outside the slide and where the grey filter
    removed background). Reads are not differentiable; callers wrap them in ``torch.no_grad()``.
    """

    @property
    def slide_size(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``, to turn canvas ROIs into level-0 boxes for reports."""
        ...

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor: ...


def read_views(sources: Sequence[RegionSource], rois: torch.Tensor, size: int,
               device: torch.device) -> torch.Tensor:
    """Read ROIs ``(B, N, 3, 3)`` (row b from ``sources[b]``) as ``(B, N, 3, size, size)``, detached.

    One ``read`` call per slide, with all of its ROIs.
    """
    with torch.no_grad():
        views = [source.read(slide_rois, size) for source, slide_rois in zip(sources, rois, strict=True)]
        return torch.stack(views).to(device=device, dtype=torch.float32)
