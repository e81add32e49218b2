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
- s = max(s, min_scale) (eq. 1; paper: 0.05).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from magnet.errors import ConfigError

__all__ = ["SPREADS", "Spread", "pixel_centres", "theta_from_probability"]

# How s is read off the map, named once: the model config (key ``spread``) takes its choices from here.
Spread = Literal["calibrated", "expected_l2"]
SPREADS: tuple[Spread, ...] = get_args(Spread)


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
