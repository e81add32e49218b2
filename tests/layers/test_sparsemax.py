"""Sparsemax (Martins & Astudillo 2016): our sort-based Function against entmax and a bisection solver."""

from __future__ import annotations

import entmax
import pytest
import torch

from magnet.layers import Sparsemax, sparsemax, spatial_sparsemax


def bisection_sparsemax(x: torch.Tensor, dim: int = -1, iterations: int = 100) -> torch.Tensor:
    """A second algorithm: find tau with sum(max(x - tau, 0)) = 1 by bisection (monotone in tau)."""
    x = x.double().movedim(dim, -1)
    low = x.amax(dim=-1, keepdim=True) - 1  # sum >= 1 here
    high = x.amax(dim=-1, keepdim=True)  # sum = 0 here
    for _ in range(iterations):
        mid = (low + high) / 2
        too_low = torch.clamp(x - mid, min=0).sum(dim=-1, keepdim=True) > 1
        low = torch.where(too_low, mid, low)
        high = torch.where(too_low, high, mid)
    return torch.clamp(x - (low + high) / 2, min=0).movedim(-1, dim)


@pytest.fixture
def scores() -> torch.Tensor:
    return torch.randn(5, 7, 13, generator=torch.Generator().manual_seed(0)) * 2


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_is_a_probability_distribution(scores: torch.Tensor, dim: int) -> None:
    p = sparsemax(scores, dim=dim)
    assert p.shape == scores.shape
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=dim), torch.ones_like(p.sum(dim=dim)))


def test_peaked_input_is_sparse_and_flat_input_is_uniform() -> None:
    peaked = torch.tensor([0.0, 0.1, 5.0, 0.2, 4.5])
    p = sparsemax(peaked)
    assert int((p > 0).sum()) == 2  # 5 and 4.5 share the mass: (5 - tau) + (4.5 - tau) = 1
    torch.testing.assert_close(p, torch.tensor([0.0, 0.0, 0.75, 0.0, 0.25]))
    torch.testing.assert_close(sparsemax(torch.full((4,), 3.0)), torch.full((4,), 0.25))
    one_hot = sparsemax(torch.tensor([0.0, 10.0, 0.0]))
    torch.testing.assert_close(one_hot, torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("dim", [-1, 1])
def test_matches_entmax_and_bisection(scores: torch.Tensor, dim: int) -> None:
    p = sparsemax(scores, dim=dim)
    torch.testing.assert_close(p, entmax.sparsemax(scores, dim=dim), atol=1e-6, rtol=0)
    torch.testing.assert_close(p.double(), bisection_sparsemax(scores, dim=dim), atol=1e-6, rtol=0)


def test_shift_invariant_and_large_scores() -> None:
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sparsemax(x + 1e4), sparsemax(x), atol=2e-3, rtol=0)
    torch.testing.assert_close(sparsemax(x.double() + 1e6), sparsemax(x.double()), atol=1e-8, rtol=0)


def test_gradcheck_float64() -> None:
    # Well-separated scores so finite differences never cross a support boundary.
    x = torch.tensor([[0.1, 0.9, 0.35, -0.8, 0.6], [1.2, -0.3, 1.0, 0.05, 1.1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: sparsemax(t, dim=-1), (x.requires_grad_(),))
    assert torch.autograd.gradcheck(lambda t: sparsemax(t, dim=0), (x,))


def test_gradient_matches_entmax(scores: torch.Tensor) -> None:
    weights = torch.randn(scores.shape, generator=torch.Generator().manual_seed(2))
    ours = scores.clone().requires_grad_()
    ref = scores.clone().requires_grad_()
    (sparsemax(ours, dim=1) * weights).sum().backward()
    (entmax.sparsemax(ref, dim=1) * weights).sum().backward()
    assert ours.grad is not None and ref.grad is not None
    torch.testing.assert_close(ours.grad, ref.grad, atol=1e-6, rtol=0)


def test_module_wraps_function(scores: torch.Tensor) -> None:
    module = Sparsemax(dim=0)
    torch.testing.assert_close(module(scores), sparsemax(scores, dim=0))
    assert "dim=0" in repr(module)


def test_spatial_sparsemax_flattens_h_and_w() -> None:
    logits = torch.randn(2, 3, 6, 9, generator=torch.Generator().manual_seed(3)) * 3
    p = spatial_sparsemax(logits)
    assert p.shape == logits.shape
    torch.testing.assert_close(p.sum(dim=(-2, -1)), torch.ones(2, 3))
    expected = entmax.sparsemax(logits.flatten(-2), dim=-1).unflatten(-1, (6, 9))
    torch.testing.assert_close(p, expected, atol=1e-6, rtol=0)


def test_spatial_sparsemax_half_precision_is_computed_in_float32() -> None:
    logits = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(4))
    p = spatial_sparsemax(logits.to(torch.bfloat16))
    assert p.dtype == torch.bfloat16
    reference = spatial_sparsemax(logits.to(torch.bfloat16).float())
    torch.testing.assert_close(p.float(), reference, atol=1e-2, rtol=0)
    assert spatial_sparsemax(logits.double()).dtype == torch.float64


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="H, W"):
        spatial_sparsemax(torch.zeros(5))
    with pytest.raises(ValueError, match="empty"):
        sparsemax(torch.zeros(3, 0))
