"""From a spatial probability map to the transformation theta = (s, tx, ty) of one output patch.

MagNet paper §3.1 ("Spatial Transformer", eqs. 1-4) reads the parameters of an isotropic zoom off the
spatial-sparsemax map P of a localisation head. The paper's sentence swaps "expected value" and
"expected L2"; docs/method.md §2.3 fixes the reading used here (two translations from the mean, one scale from
the spread) and is the decision where it differs from the paper:

- pixel-centre coordinates in the ``align_corners=False`` convention: x_j = (2j + 1) / n - 1;
- mu = sum P * (x, y); t = tanh(mu + atanh(o)) (eqs. 2-3), with o a per-child initial offset in (-1, 1)
  (docs/method.md §2.4 [choice], breaks the symmetry between siblings; o = 0 gives the paper's t = tanh(mu));
- ``spread="calibrated"`` [choice, default]: s = sqrt(1.5 * sum P * ((x - mu_x)^2 + (y - mu_y)^2)).
  The factor 1.5 makes a uniform square of half-width a give s = a, so a flat map is the identity view
  (on n x n pixel centres exactly s = sqrt(1 - 1/n^2): 0.99984 at n = 56, docs/method.md §2.3);
- ``spread="expected_l2"``: the literal s = sum P * ||(x, y) - mu||_2 (a flat map then gives s ~ 0.765);
- s = max(s, min_scale) (eq. 1; paper: 0.05); where ``min_scale = max_scale`` (a zoom fixed per layer,
  docs/method.md §9 ``model.layer_scales`` [choice]) s is that value exactly: the map places the box, its
  spread does not size it (a map with mass at both ends of its view spreads wider than a flat one).

``peak_translation`` [choice, config ``box_centre=peak``, docs/method.md §9] is a second reading of the
translation, for the learned zoom: the box goes where it covers the most of the map's probability, not to
the map's mean, which falls between the blobs of a map with several.

``snap_translation`` [choice, config ``box_grid``, docs/method.md §9] puts a box's centre on its parent
view's pixel grid. A learned zoom's boxes amplify rounding from layer to layer: a box that moves by a
hundredth of a pixel gives the next layer a view shifted by that much, whose heads move their boxes further
(docs/BENCHMARKS.md, "One checkpoint on one thread and on two"). On the grid, a shift far below a pixel
leaves a box where it was; with a zoom fixed per layer (min_scale = max_scale) the box, and so the next
view, is then the same to the bit, and the chain stops.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from magnet.errors import ConfigError

__all__ = [
    "BOX_CENTRES",
    "BoxCentre",
    "SPREADS",
    "Spread",
    "peak_translation",
    "pixel_centres",
    "snap_translation",
    "theta_from_probability",
]

# How s is read off the map, named once: the model config (key ``spread``) takes its choices from here.
Spread = Literal["calibrated", "expected_l2"]
SPREADS: tuple[Spread, ...] = get_args(Spread)
# Where a learned box's centre is read off its map (config key ``box_centre``): eqs. 2-3, or the densest box.
BoxCentre = Literal["mean", "peak"]
BOX_CENTRES: tuple[BoxCentre, ...] = get_args(BoxCentre)


def pixel_centres(
    n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised coordinates of the centres of ``n`` pixels: x_j = (2j + 1) / n - 1 (align_corners=False)."""
    if n < 1:
        raise ValueError(f"pixel_centres needs n >= 1, got {n}")
    return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1


def theta_from_probability(
    prob: Tensor,
    *,
    min_scale: float = 0.05,
    spread: Spread = "calibrated",
    offset: Tensor | None = None,
    max_scale: float = 1.0,
) -> Tensor:
    """Turn probability maps ``(..., H, W)`` (each summing to 1) into theta ``(..., 3)`` = (s, tx, ty).

    ``offset`` (broadcastable to ``(..., 2)``, values strictly inside (-1, 1)) is the initial offset of each
    child: with a flat map (mu = 0) the translation is exactly ``offset``. H and W may differ; x runs along
    W and y along H, both in [-1, 1] (docs/method.md §1).

    ``max_scale`` [choice, docs/method.md §9] multiplies the spread: s = max(max_scale * spread, min_scale),
    so a flat map gives ``max_scale`` instead of the identity view. With 1 (the default) untrained heads never
    zoom and a 3-layer MagNet's final patches are the whole slide; below 1 every layer starts zoomed in.
    """
    if prob.dim() < 2:
        raise ValueError(f"theta_from_probability needs (..., H, W) maps, got shape {tuple(prob.shape)}")
    if spread not in SPREADS:
        raise ConfigError(f"spread={spread!r}: must be one of {', '.join(SPREADS)}")
    if not 0 < max_scale <= 1:
        raise ConfigError(f"max_scale={max_scale}: must lie in (0, 1]")
    if not min_scale > 0:
        raise ConfigError(f"min_scale={min_scale}: must be > 0 (the floor keeps the zoom gradients alive)")
    height, width = prob.shape[-2:]
    x = pixel_centres(width, device=prob.device, dtype=prob.dtype)  # (W,)
    y = pixel_centres(height, device=prob.device, dtype=prob.dtype)  # (H,)
    # Marginals make the moments cheap: sum_{i,j} P_ij f(x_j) = sum_j (sum_i P_ij) f(x_j).
    prob_x = prob.sum(dim=-2)  # (..., W)
    prob_y = prob.sum(dim=-1)  # (..., H)
    mu_x = (prob_x * x).sum(dim=-1)
    mu_y = (prob_y * y).sum(dim=-1)

    if spread == "calibrated":
        variance = (prob_x * (x - mu_x.unsqueeze(-1)) ** 2).sum(dim=-1) + (
            prob_y * (y - mu_y.unsqueeze(-1)) ** 2
        ).sum(dim=-1)
        # Flooring before the sqrt equals max(sqrt(.), min_scale) for min_scale > 0; it also keeps
        # sqrt away from 0, whose infinite derivative would turn a one-pixel map's zero gradient into NaN.
        # Above the floor the gradient is the ordinary one; below it, zero (as eq. 1's max).
        scale = torch.sqrt(torch.clamp(1.5 * variance * max_scale**2, min=min_scale**2))
    else:
        dx = x - mu_x[..., None, None]  # (..., 1, W)
        dy = y[:, None] - mu_y[..., None, None]  # (..., H, 1)
        # torch's 2-norm backward is 0 (not NaN) where the norm is 0, e.g. when mu sits on a pixel centre.
        distance = torch.linalg.vector_norm(torch.stack(torch.broadcast_tensors(dx, dy), dim=-1), dim=-1)
        scale = torch.clamp(max_scale * (prob * distance).sum(dim=(-2, -1)), min=min_scale)
    if min_scale == max_scale:  # a fixed zoom: without this a two-ended map would widen the box past it
        scale = torch.full_like(scale, max_scale)

    mu = torch.stack([mu_x, mu_y], dim=-1)
    if offset is not None:
        offset = offset.to(device=prob.device, dtype=prob.dtype)
        if offset.shape[-1:] != (2,):
            shape = tuple(offset.shape)
            raise ValueError(f"offset must have a last dimension of 2 (ox, oy), got shape {shape}")
        if not bool((offset.abs() < 1).all()):
            raise ConfigError("offset values must lie strictly inside (-1, 1): they pass through atanh")
        mu = mu + torch.atanh(offset)
    translation = torch.tanh(mu)
    scale = scale.unsqueeze(-1).expand(*translation.shape[:-1], 1)
    return torch.cat([scale, translation], dim=-1)


def peak_translation(prob: Tensor, scale: Tensor, offset: Tensor | None = None) -> Tensor:
    """The translation ``(..., 2)`` = (tx, ty) of boxes of half-side ``scale`` ``(...)`` placed where they
    cover the most of their maps ``prob`` ``(..., H, W)`` [choice, docs/method.md §9].

    Among the boxes of that side that lie inside the parent (a window of round(s W) x round(s H) pixels),
    those holding the most probability mass win (ties within 1e-9 of the mass all win); the centre c is the
    mean of P over the pixels those boxes cover, so a compact blob smaller than the box sits in its middle
    and a flat map gives what the mean reading gives (c = 0 on a whole-view flat map). c is clamped so the
    box stays inside its parent. The gradient reaches P through that restricted mean (the choice of boxes
    carries none). ``offset`` o composes as in eqs. 2-3, t = tanh(atanh(c) + atanh(o)).
    """
    if prob.dim() < 2 or scale.shape != prob.shape[:-2]:
        raise ValueError(
            f"peak_translation needs maps (..., H, W) and one scale per map, got {tuple(prob.shape)} "
            f"and {tuple(scale.shape)}"
        )
    height, width = prob.shape[-2:]
    maps = prob.reshape(-1, height, width)
    half = scale.detach().reshape(-1).to(torch.float64)
    rows = torch.clamp(torch.round(half * height), 1, height).long()  # the box's side in pixels, per map
    cols = torch.clamp(torch.round(half * width), 1, width).long()
    integral = _integral_image(maps.detach().to(torch.float64))
    # Mass of the window whose top-left pixel is (i, j), for every window inside the map.
    top = torch.arange(height, device=prob.device).expand(len(maps), -1)
    left = torch.arange(width, device=prob.device).expand(len(maps), -1)
    mass = _window_sums(integral, top, top + rows[:, None], left, left + cols[:, None])
    inside = (top + rows[:, None] <= height)[:, :, None] & (left + cols[:, None] <= width)[:, None, :]
    mass = mass.masked_fill(~inside, -1.0)
    best = mass.flatten(1).amax(dim=1)[:, None, None]
    winners = (mass >= best - 1e-9) & inside  # masses are at most 1: an absolute tolerance
    # Pixels some winning window covers: a winner's top-left within (side - 1) pixels above-left of them.
    counts = _window_sums(
        _integral_image(winners.to(torch.float64)),
        (top - rows[:, None] + 1).clamp(min=0),
        top + 1,
        (left - cols[:, None] + 1).clamp(min=0),
        left + 1,
    )
    covered = (counts > 0.5).to(prob.dtype)
    weights = maps * covered
    total = weights.sum(dim=(-2, -1))
    x = pixel_centres(width, device=prob.device, dtype=prob.dtype)
    y = pixel_centres(height, device=prob.device, dtype=prob.dtype)
    centre = torch.stack(
        [(weights.sum(dim=-2) * x).sum(dim=-1) / total, (weights.sum(dim=-1) * y).sum(dim=-1) / total], dim=-1
    )
    # Box inside the parent: |c| <= 1 - s, where s is the side actually used (a whole number of pixels).
    limit = torch.stack([1 - cols.to(prob.dtype) / width, 1 - rows.to(prob.dtype) / height], dim=-1)
    centre = torch.maximum(torch.minimum(centre, limit), -limit)
    centre = centre.reshape(*prob.shape[:-2], 2)
    if offset is None:
        return centre
    offset = offset.to(device=prob.device, dtype=prob.dtype)
    # atanh of a centre on the limit 1 - 1/W is finite; a one-pixel-wide map (limit 0) gives c = 0.
    return torch.tanh(torch.atanh(centre.clamp(-1 + 1e-6, 1 - 1e-6)) + torch.atanh(offset))


def _integral_image(maps: Tensor) -> Tensor:
    """``(M, H + 1, W + 1)`` sums of ``maps`` ``(M, H, W)`` above-left of each corner, a zero row and column
    first."""
    summed = maps.cumsum(dim=-2).cumsum(dim=-1)
    return torch.nn.functional.pad(summed, (1, 0, 1, 0))


def _window_sums(integral: Tensor, row_lo: Tensor, row_hi: Tensor, col_lo: Tensor, col_hi: Tensor) -> Tensor:
    """Sums ``(M, R, C)`` over rows [row_lo, row_hi) x cols [col_lo, col_hi), bounds ``(M, R)`` / ``(M, C)``
    (clamped to the map), read off an integral image ``(M, H + 1, W + 1)``."""
    height, width = integral.shape[-2] - 1, integral.shape[-1] - 1
    row_lo, row_hi = row_lo.clamp(0, height), row_hi.clamp(0, height)
    col_lo, col_hi = col_lo.clamp(0, width), col_hi.clamp(0, width)

    def corner(rows: Tensor, cols: Tensor) -> Tensor:
        picked = integral.gather(1, rows[:, :, None].expand(-1, -1, width + 1))  # (M, R, W + 1)
        return picked.gather(2, cols[:, None, :].expand(-1, rows.shape[1], -1))  # (M, R, C)

    return corner(row_hi, col_hi) - corner(row_lo, col_hi) - corner(row_hi, col_lo) + corner(row_lo, col_lo)


def snap_translation(theta: Tensor, view_size: int) -> Tensor:
    """``theta`` ``(..., 3)`` with (tx, ty) rounded to the nearest multiple of one pixel of a ``view_size``-
    pixel parent view (2 / view_size in normalised units), clamped into (-1, 1) as tanh's range is; the
    scale is kept. No gradient reaches the translation: it is for placing boxes, not for learning them.
    """
    if view_size < 1:
        raise ValueError(f"snap_translation needs view_size >= 1, got {view_size}")
    pixel = 2.0 / view_size
    translation = torch.round(theta[..., 1:].detach() / pixel) * pixel
    limit = 1.0 - pixel  # the grid point nearest each edge, inside (-1, 1)
    translation = translation.clamp(-limit, limit) if view_size > 1 else torch.zeros_like(translation)
    return torch.cat([theta[..., :1], translation], dim=-1)
