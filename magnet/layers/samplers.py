"""Differentiable image samplers with the signature of ``torch.nn.functional.grid_sample``.

- :func:`bilinear_sample`: plain bilinear ``grid_sample`` (zeros padding, ``align_corners=False``).
- :func:`linearized_sample`: linearized multi-sampling, Jiang, Sun, Tagliasacchi, Yi, Moo Yi, "Linearized
  Multi-Sampling for Differentiable Image Transformation", ICCV 2019. Bilinear sampling's gradient with
  respect to the grid only sees the 4 pixels around each sample point, so it becomes useless when a
  transformer zooms out or in a lot. The linearized sampler draws several random samples around each
  sample point, fits a plane I ~ I0 + a dx + b dy + d to them by least squares, and uses its slope (a, b) as
  the gradient with respect to the grid. Forward values and the gradient with respect to the image stay
  bilinear.

MagNet (paper §3.1, "Sampler") uses the linearized sampler; docs/method.md §3 fixes its hyper-parameters
and is followed here: K = 8 samples per output pixel (the centre g0 and 7 auxiliaries g0 + e1 + e2 with
e1 ~ N(0, (0.5/W_out)^2, (0.5/H_out)^2) and e2 ~ N(0, (2/W_in)^2, (2/H_in)^2) in normalised units), a
per-pixel, per-channel fit with intercept on centred data with a closed-form 2x2 inverse, in float32, and
plain bilinear at inference (docs/method.md §3.4). This is our own implementation of the published method.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError

__all__ = ["bilinear_sample", "linearized_sample", "Sampler", "SAMPLER_KINDS", "SamplerKind"]

# The sampler kinds, named once: the model config (key ``sampler``) takes its choices from here.
SamplerKind = Literal["linearized", "bilinear"]
SAMPLER_KINDS: tuple[SamplerKind, ...] = get_args(SamplerKind)
_LMS_KEYS = ("num_samples", "out_noise", "in_noise", "fixed_bias")

# Tikhonov term of the 2x2 normal equations. The fit runs on displacements divided by their noise std, so
# the normal matrix is ~K * identity and this is negligible unless the samples are degenerate (zero noise),
# where it turns 0/0 into a zero slope instead of NaN.
_RIDGE = 1e-8


def _check_shapes(input: Tensor, grid: Tensor) -> None:
    if input.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(
            "expected input (N, C, H_in, W_in) and grid (N, H_out, W_out, 2), got "
            f"{tuple(input.shape)} and {tuple(grid.shape)}"
        )


def bilinear_sample(input: Tensor, grid: Tensor) -> Tensor:
    """Bilinear ``grid_sample`` with zeros padding and ``align_corners=False`` (docs/method.md §1)."""
    _check_shapes(input, grid)
    if grid.dtype != input.dtype:
        grid = grid.to(input.dtype)
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def linearized_sample(
    input: Tensor,
    grid: Tensor,
    *,
    num_samples: int = 8,
    out_noise: float = 0.5,
    in_noise: float = 2.0,
    fixed_bias: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Linearized multi-sampling (Jiang et al., ICCV 2019; docs/method.md §3).

    ``input`` (N, C, H_in, W_in), ``grid`` (N, H_out, W_out, 2) in normalised coordinates. ``num_samples``
    counts the centre sample too (>= 3: a plane with intercept has 3 unknowns). ``out_noise`` / ``in_noise``
    are the noise std in output / input pixels. ``fixed_bias=True`` drops the fitted intercept so the
    forward values are exactly bilinear (the reference adds it: default False). ``generator`` makes the
    noise reproducible; it must live on the grid's device.

    Returns float32 (float64 for float64 input), also under autocast, like ``grid_sample`` under autocast.
    The gradient with respect to ``input`` is bilinear's at the grid; the gradient with respect to
    ``grid`` is the fitted slope (a, b) per pixel and channel (chain-ruled through the output gradient).
    """
    _check_shapes(input, grid)
    if num_samples < 3:
        raise ConfigError(f"num_samples={num_samples}: linearized sampling needs >= 3 samples per pixel")
    if out_noise < 0 or in_noise < 0:
        raise ConfigError(f"out_noise={out_noise}, in_noise={in_noise}: noise levels must be >= 0")
    compute_dtype = torch.promote_types(input.dtype, torch.float32)
    with torch.autocast(device_type=input.device.type, enabled=False):
        image = input.to(compute_dtype)
        grid = grid.to(compute_dtype)
        return _linearized(image, grid, num_samples, out_noise, in_noise, fixed_bias, generator)


def _linearized(
    image: Tensor,
    grid: Tensor,
    num_samples: int,
    out_noise: float,
    in_noise: float,
    fixed_bias: bool,
    generator: torch.Generator | None,
) -> Tensor:
    height_in, width_in = image.shape[-2:]
    height_out, width_out = grid.shape[1:3]
    # e1 + e2 is drawn as one Gaussian with the summed variances: the same distribution, one draw.
    noise_std = torch.tensor(
        [
            ((out_noise / width_out) ** 2 + (in_noise / width_in) ** 2) ** 0.5,
            ((out_noise / height_out) ** 2 + (in_noise / height_in) ** 2) ** 0.5,
        ],
        device=grid.device,
        dtype=grid.dtype,
    )
    # The fit runs in units of the noise std (well-conditioned normal equations); zero noise -> unit 1.
    fit_unit = torch.where(noise_std > 0, noise_std, torch.ones_like(noise_std))

    centre_grid = grid.detach()
    image_detached = image.detach()
    centre = F.grid_sample(image, centre_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    centre_detached = centre.detach()

    # Streamed sufficient statistics over the K samples (the centre contributes zeros), so memory stays
    # a few output-sized tensors whatever K is. Per pixel: sums of dx, dy, dx^2, dy^2, dx*dy (N, 1, H, W);
    # per pixel and channel: sums of dI, dI*dx, dI*dy (N, C, H, W).
    with torch.no_grad():
        per_pixel = centre_grid.new_zeros((grid.shape[0], 1, height_out, width_out))
        per_channel = torch.zeros_like(centre_detached)
        sum_x, sum_y, sum_xx, sum_yy, sum_xy = (per_pixel.clone() for _ in range(5))
        sum_i, sum_ix, sum_iy = (per_channel.clone() for _ in range(3))
        # Drawn where the generator lives (training passes a CPU one, so runs repeat on any device).
        noise_device = generator.device if generator is not None else grid.device
        for _ in range(num_samples - 1):
            noise = torch.randn(centre_grid.shape, generator=generator, device=noise_device,
                                dtype=grid.dtype).to(grid.device)
            aux_grid = centre_grid + noise * noise_std
            # The displacement actually sampled (after rounding), in noise units; (N, 1, H_out, W_out).
            delta = ((aux_grid - centre_grid) / fit_unit).permute(0, 3, 1, 2)
            dx, dy = delta[:, 0:1], delta[:, 1:2]
            aux = F.grid_sample(
                image_detached, aux_grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            d_intensity = aux.sub_(centre_detached)
            sum_x += dx
            sum_y += dy
            sum_xx.addcmul_(dx, dx)
            sum_yy.addcmul_(dy, dy)
            sum_xy.addcmul_(dx, dy)
            sum_i += d_intensity
            sum_ix.addcmul_(d_intensity, dx)
            sum_iy.addcmul_(d_intensity, dy)

        # Centred second moments: cov(u, v) * K = sum(uv) - sum(u) sum(v) / K (the intercept's effect).
        count = float(num_samples)
        mean_x, mean_y, mean_i = sum_x / count, sum_y / count, sum_i / count
        cxx = sum_xx - sum_x * mean_x + _RIDGE
        cyy = sum_yy - sum_y * mean_y + _RIDGE
        cxy = sum_xy - sum_x * mean_y
        cxi = sum_ix - mean_i * sum_x
        cyi = sum_iy - mean_i * sum_y
        # Closed-form inverse of [[cxx, cxy], [cxy, cyy]]; never linalg.solve (raises on singular systems).
        determinant = cxx * cyy - cxy * cxy
        slope_x = (cyy * cxi - cxy * cyi) / determinant
        slope_y = (cxx * cyi - cxy * cxi) / determinant
        intercept = mean_i - slope_x * mean_x - slope_y * mean_y
        # Back from noise units to normalised-coordinate units.
        slope_x = torch.nan_to_num(slope_x / fit_unit[0], nan=0.0, posinf=0.0, neginf=0.0)
        slope_y = torch.nan_to_num(slope_y / fit_unit[1], nan=0.0, posinf=0.0, neginf=0.0)
        intercept = torch.nan_to_num(intercept, nan=0.0, posinf=0.0, neginf=0.0)

    # Zero-valued terms whose gradient with respect to the grid is the fitted slope (a, b).
    grid_x = grid[..., 0].unsqueeze(1)
    grid_y = grid[..., 1].unsqueeze(1)
    output = centre + slope_x * (grid_x - grid_x.detach()) + slope_y * (grid_y - grid_y.detach())
    if not fixed_bias:
        output = output + intercept
    return output


class Sampler(nn.Module):
    """A ``grid_sample``-like module: linearized multi-sampling while training, bilinear in eval.

    docs/method.md §3.4: at inference the sampler is plain bilinear (deterministic; the linearized forward
    with ``fixed_bias=True`` equals it). ``lms_kwargs`` are the keyword arguments of :func:`linearized_sample`
    (``num_samples``, ``out_noise``, ``in_noise``, ``fixed_bias``); they are checked but unused for
    ``kind="bilinear"``.
    """

    def __init__(self, kind: SamplerKind = "linearized", **lms_kwargs: Any) -> None:
        super().__init__()
        if kind not in SAMPLER_KINDS:
            raise ConfigError(f"sampler kind={kind!r}: must be one of {', '.join(SAMPLER_KINDS)}")
        unknown = sorted(set(lms_kwargs) - set(_LMS_KEYS))
        if unknown:
            known = ", ".join(_LMS_KEYS)
            raise ConfigError(f"unknown sampler option(s) {', '.join(unknown)}; known: {known}")
        self.kind = kind
        self.lms_kwargs = dict(lms_kwargs)

    def forward(self, input: Tensor, grid: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.kind == "linearized" and self.training:
            return linearized_sample(input, grid, generator=generator, **self.lms_kwargs)
        return bilinear_sample(input, grid)

    def extra_repr(self) -> str:
        options = "".join(f", {key}={value}" for key, value in self.lms_kwargs.items())
        return f"kind={self.kind!r}{options}"
