"""theta = (s, tx, ty) from a probability map (MagNet paper eqs. 1-4 as read by docs/method.md §2.3)."""

from __future__ import annotations

import math

import pytest
import torch

from magnet.errors import ConfigError
from magnet.layers import pixel_centres, spatial_sparsemax, theta_from_probability


def flat(height: int, width: int, *batch: int) -> torch.Tensor:
    return torch.full((*batch, height, width), 1.0 / (height * width))


def test_pixel_centres_align_corners_false() -> None:
    torch.testing.assert_close(pixel_centres(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert pixel_centres(3, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError):
        pixel_centres(0)


def test_flat_56_map_is_the_identity_view() -> None:
    theta = theta_from_probability(flat(56, 56, 2, 3))
    assert theta.shape == (2, 3, 3)
    # Pixel centres of a flat map have variance (1 - 1/n^2) / 3 per axis, so s = sqrt(1 - 1/56^2).
    torch.testing.assert_close(theta, torch.tensor([1.0, 0.0, 0.0]).expand(2, 3, 3), atol=2e-4, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(56, 56), (10, 24), (3, 3)])
def test_flat_map_scale_is_the_discrete_uniform_spread(height: int, width: int) -> None:
    s, tx, ty = theta_from_probability(flat(height, width))
    expected = math.sqrt(1 - (1 / width**2 + 1 / height**2) / 2)
    assert float(s) == pytest.approx(expected, rel=1e-5)
    assert abs(float(tx)) < 1e-6 and abs(float(ty)) < 1e-6


@pytest.mark.parametrize("spread", ["calibrated", "expected_l2"])
def test_one_pixel_map_gives_its_centre_and_the_floor(spread: str) -> None:
    height, width, row, col = 8, 12, 2, 9
    prob = torch.zeros(height, width)
    prob[row, col] = 1
    s, tx, ty = theta_from_probability(prob, spread=spread, min_scale=0.05)  # type: ignore[arg-type]
    assert float(s) == pytest.approx(0.05)
    assert float(tx) == pytest.approx(math.tanh((2 * col + 1) / width - 1))
    assert float(ty) == pytest.approx(math.tanh((2 * row + 1) / height - 1))


@pytest.mark.parametrize("half_width", [0.25, 0.5, 0.75])
def test_uniform_square_of_half_width_a_gives_s_about_a(half_width: float) -> None:
    n = 112
    x = pixel_centres(n)
    inside = (x.abs() < half_width)[:, None] & (x.abs() < half_width)[None, :]
    prob = inside.float() / inside.sum()
    s, tx, ty = theta_from_probability(prob)
    assert float(s) == pytest.approx(half_width, rel=0.02)
    assert abs(float(tx)) < 1e-6 and abs(float(ty)) < 1e-6


@pytest.mark.parametrize("spread", ["calibrated", "expected_l2"])
def test_a_fixed_zoom_keeps_its_scale_on_a_map_with_mass_at_both_ends(spread: str) -> None:
    prob = torch.zeros(2, 56, 56)
    prob[0, 0, 0] = prob[0, 55, 55] = 0.5  # opposite corners: spread about sqrt(3) (calibrated)
    prob[1, 20, 30] = 1.0
    free = theta_from_probability(prob, spread=spread, min_scale=0.05)  # type: ignore[arg-type]
    assert float(free[0, 0]) > 1.0  # the paper's eq. 1 sizes the box by the spread, past the parent
    fixed = theta_from_probability(prob, spread=spread, min_scale=0.3, max_scale=0.3)  # type: ignore[arg-type]
    torch.testing.assert_close(fixed[:, 0], torch.tensor([0.3, 0.3]))
    torch.testing.assert_close(fixed[:, 1:], theta_from_probability(prob, spread=spread)[:, 1:])  # type: ignore[arg-type]


def test_expected_l2_switch_is_the_mean_distance() -> None:
    # E||(x, y)|| over the uniform square [-1, 1]^2 is (sqrt(2) + asinh(1)) / 3.
    s = theta_from_probability(flat(200, 200), spread="expected_l2")[0]
    assert float(s) == pytest.approx((math.sqrt(2) + math.asinh(1)) / 3, rel=1e-3)


def test_offset_with_flat_map_gives_the_offset() -> None:
    offsets = torch.tensor([[-0.4, 0.4], [0.4, -0.4], [0.0, 0.3]])
    theta = theta_from_probability(flat(56, 56, 5, 3), offset=offsets)
    assert theta.shape == (5, 3, 3)
    torch.testing.assert_close(theta[..., 1:], offsets.expand(5, 3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(theta[..., 0], torch.ones(5, 3), atol=2e-4, rtol=0)


def test_offset_broadcasts_a_flat_batch() -> None:
    theta = theta_from_probability(flat(56, 56), offset=torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
    assert theta.shape == (2, 3)
    torch.testing.assert_close(theta[:, 0], torch.ones(2), atol=2e-4, rtol=0)
    torch.testing.assert_close(theta[:, 1:], torch.tensor([[0.1, 0.2], [0.3, 0.4]]))


@pytest.mark.parametrize("spread", ["calibrated", "expected_l2"])
def test_gradients_are_finite_through_sparsemax(spread: str) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 14, 14, generator=generator)
    logits[0] *= 1e-3  # near flat
    logits[1] *= 100.0  # one-hot: s on the floor
    logits[2, :, 3, 5] = 1e3  # exactly one pixel, mu on a pixel centre (||d|| = 0 there)
    logits.requires_grad_()
    offset = torch.tensor([[0.4, -0.4], [-0.4, 0.4]])
    theta = theta_from_probability(spatial_sparsemax(logits), spread=spread, offset=offset)  # type: ignore[arg-type]
    theta.sum().backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0].abs().sum() > 0


def test_scale_gradient_flows_above_the_floor_only() -> None:
    prob = flat(8, 8).requires_grad_()
    theta_from_probability(prob)[0].backward()
    assert prob.grad is not None and prob.grad.abs().sum() > 0
    one_hot = torch.zeros(8, 8)
    one_hot[1, 1] = 1
    one_hot.requires_grad_()
    theta_from_probability(one_hot)[0].backward()
    assert one_hot.grad is not None and torch.equal(one_hot.grad, torch.zeros(8, 8))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="spread"):
        theta_from_probability(flat(4, 4), spread="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_scale"):
        theta_from_probability(flat(4, 4), min_scale=0.0)
    with pytest.raises(ConfigError, match="inside"):
        theta_from_probability(flat(4, 4), offset=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="last dimension"):
        theta_from_probability(flat(4, 4), offset=torch.tensor([0.1, 0.0, 0.2]))
    with pytest.raises(ValueError, match="H, W"):
        theta_from_probability(torch.ones(3))


@pytest.mark.parametrize("spread", ["calibrated", "expected_l2"])
def test_max_scale_multiplies_the_spread_and_keeps_the_floor(spread: str) -> None:
    n = 112
    x = pixel_centres(n)
    inside = (x.abs() < 0.5)[:, None] & (x.abs() < 0.5)[None, :]
    prob = inside.float() / inside.sum()
    full = theta_from_probability(prob, spread=spread)  # type: ignore[arg-type]
    half = theta_from_probability(prob, spread=spread, max_scale=0.5)  # type: ignore[arg-type]
    assert float(half[0]) == pytest.approx(0.5 * float(full[0]), rel=1e-5)
    assert torch.equal(half[1:], full[1:])
    flat = torch.full((n, n), 1.0 / n**2)
    assert float(theta_from_probability(flat, max_scale=0.4)[0]) == pytest.approx(0.4, rel=1e-3)
    peaked = torch.zeros(n, n)
    peaked[3, 5] = 1.0
    assert float(theta_from_probability(peaked, max_scale=0.4, min_scale=0.05)[0]) == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="max_scale"):
        theta_from_probability(flat, max_scale=0.0)
