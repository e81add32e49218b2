"""Sparsemax and the spatial sparsemax of a magnifying layer.

Sparsemax (Martins & Astudillo, "From Softmax to Sparsemax: A Sparse Model of Attention and Multi-Label
Classification", ICML 2016) is the Euclidean projection of a score vector z onto the probability simplex:
p = max(z - tau, 0) with the threshold tau chosen so that p sums to one. We compute tau with the sort-based
algorithm of that paper (its Algorithm 1) and use its closed-form Jacobian for the backward pass:
on the support S = {i : p_i > 0}, dL/dz = g - mean_S(g), and zero off the support.

MagNet (paper §3.1, "Spatial Transformer"; docs/method.md §2.2) applies it over all pixels of a head's logit
map ("spatial sparsemax"), flattening H x W, in float32. The PyPI package ``entmax`` is the reference the
tests compare against; this module is our own implementation so that it has no runtime dependency on it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from magnet.errors import NonFiniteError

__all__ = ["SparsemaxFunction", "Sparsemax", "sparsemax", "spatial_sparsemax"]


def _sparsemax_forward(x: Tensor, dim: int) -> Tensor:
    """Sort-based sparsemax along ``dim`` (Martins & Astudillo 2016, Algorithm 1)."""
    n = x.shape[dim]
    # Sparsemax is shift-invariant; subtracting the max keeps the cumulative sums small.
    z = x - x.amax(dim=dim, keepdim=True)
    z_sorted, _ = torch.sort(z, dim=dim, descending=True)
    cumulative = z_sorted.cumsum(dim=dim)
    # k = 1..n laid out along `dim` so that it broadcasts against the sorted scores.
    shape = [1] * x.dim()
    shape[dim] = n
    k = torch.arange(1, n + 1, device=x.device, dtype=x.dtype).view(shape)
    # Element k (1-based, sorted) is in the support iff 1 + k * z_(k) > sum_{j<=k} z_(j); the support is
    # a prefix of the sorted order, so its size is the count of true entries.
    in_support = (1 + k * z_sorted) > cumulative
    support_size = in_support.sum(dim=dim, keepdim=True)
    tau = (cumulative.gather(dim, support_size - 1) - 1) / support_size.to(x.dtype)
    return torch.clamp(z - tau, min=0)


class SparsemaxFunction(torch.autograd.Function):
    """Autograd function: sort-based forward, closed-form backward (Martins & Astudillo 2016, §2.5)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int = -1) -> Tensor:  # type: ignore[override]
        dim = dim % x.dim()
        p = _sparsemax_forward(x, dim)
        ctx.dim = dim
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        dim = ctx.dim
        support = (p > 0).to(grad_output.dtype)
        # Jacobian of sparsemax: diag(s) - s s^T / |S|, with s the support indicator.
        grad_on_support = grad_output * support
        mean_on_support = grad_on_support.sum(dim=dim, keepdim=True) / support.sum(dim=dim, keepdim=True)
        return support * (grad_output - mean_on_support), None


def sparsemax(x: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax of ``x`` along ``dim``: non-negative, sums to 1, exactly zero outside its support."""
    if x.dim() == 0:
        raise ValueError("sparsemax needs at least a 1-d tensor")
    if x.shape[dim] == 0:
        raise ValueError(f"sparsemax over an empty dimension (dim={dim}, shape={tuple(x.shape)})")
    # A NaN or inf score leaves the support empty, and the threshold would index position -1: refuse it
    # here, with a message, instead of failing deep inside the gather (one device sync per call).
    if not bool(torch.isfinite(x).all()):
        kind = "nan" if bool(torch.isnan(x).any()) else "inf"
        raise NonFiniteError(f"non-finite scores ({kind}) reached the sparsemax of a localisation head")
    out: Tensor = SparsemaxFunction.apply(x, dim)
    return out


class Sparsemax(nn.Module):
    """Module wrapper of :func:`sparsemax` along a fixed ``dim``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return sparsemax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def spatial_sparsemax(logits: Tensor) -> Tensor:
    """Sparsemax over the last two dimensions: logits ``(..., H, W)`` -> probabilities ``(..., H, W)``.

    docs/method.md §2.2: flatten H x W, sparsemax, reshape. Half-precision inputs are computed in float32
    (the threshold is a difference of cumulative sums over H*W values, too coarse in fp16/bf16) and cast
    back to the input dtype; float64 stays float64 (gradcheck).
    """
    if logits.dim() < 2:
        raise ValueError(f"spatial_sparsemax needs (..., H, W) logits, got shape {tuple(logits.shape)}")
    height, width = logits.shape[-2:]
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    flat = logits.to(compute_dtype).flatten(start_dim=-2)
    probabilities = sparsemax(flat, dim=-1)
    return probabilities.unflatten(-1, (height, width)).to(logits.dtype)
