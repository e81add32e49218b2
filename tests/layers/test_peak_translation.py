"""The densest-box reading of a learned box's centre (config ``box_centre=peak``, docs/method.md §9)."""

from __future__ import annotations

import pytest
import torch

from magnet.layers import peak_translation, pixel_centres, theta_from_probability

N = 56


def blobs(*spots: tuple[int, int, int, float]) -> torch.Tensor:
    """A map ``(N, N)`` with square blobs (row, col, side, mass), each uniform, summing to 1."""
    prob = torch.zeros(N, N, dtype=torch.float64)
    for row, col, side, mass in spots:
        prob[row : row + side, col : col + side] += mass / side**2
    return prob / prob.sum()


def box_mass(prob: torch.Tensor, centre: torch.Tensor, side: int) -> float:
    """Probability inside the box of ``side`` pixels centred on ``centre`` (x, y), by pixel centres."""
    x = pixel_centres(N, dtype=prob.dtype)
    half = side / N
    cols = (x - centre[0]).abs() <= half + 1e-9
    rows = (x - centre[1]).abs() <= half + 1e-9
    return float(prob[rows][:, cols].sum())


def test_a_flat_map_gives_the_centre_and_an_offset_composes_as_in_eq_2() -> None:
    flat = torch.full((2, N, N), 1.0 / N**2)
    torch.testing.assert_close(peak_translation(flat, torch.tensor([0.3, 0.5])), torch.zeros(2, 2))
    offset = torch.tensor([0.4, -0.2])
    got = peak_translation(flat, torch.tensor([0.3, 0.5]), offset)
    torch.testing.assert_close(got, offset.expand(2, 2))


def test_the_box_goes_to_the_heavier_blob_where_the_mean_falls_between() -> None:
    prob = blobs((8, 8, 4, 0.6), (40, 44, 4, 0.4))  # upper left 60 %, lower right 40 %
    side = round(0.2 * N)
    centre = peak_translation(prob, torch.tensor(0.2, dtype=torch.float64))
    x = pixel_centres(N, dtype=torch.float64)
    torch.testing.assert_close(centre, torch.stack([x[8:12].mean(), x[8:12].mean()]))  # the blob's middle
    assert box_mass(prob, centre, side) == pytest.approx(0.6)
    mean_box = theta_from_probability(prob)[1:]
    assert box_mass(prob, mean_box, side) == 0.0  # the mean reading reads the glass between


def test_the_centre_lies_in_the_densest_window_of_a_random_map() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        prob = torch.rand(N, N, generator=generator, dtype=torch.float64) ** 8  # a few strong pixels
        prob /= prob.sum()
        side = 17
        scale = torch.tensor(side / N, dtype=torch.float64)
        centre = peak_translation(prob, scale)
        windows = prob.unfold(0, side, 1).unfold(1, side, 1).sum(dim=(-2, -1))  # (N - side + 1)^2
        row, col = divmod(int(windows.argmax()), windows.shape[1])
        x = pixel_centres(N, dtype=torch.float64)
        assert x[col] <= centre[0] <= x[col + side - 1]
        assert x[row] <= centre[1] <= x[row + side - 1]


def test_a_blob_in_the_corner_keeps_the_box_inside_its_parent() -> None:
    prob = blobs((0, N - 2, 2, 1.0))  # top right corner
    scale = torch.tensor(0.25, dtype=torch.float64)
    side = round(0.25 * N)
    centre = peak_translation(prob, scale)
    torch.testing.assert_close(centre, torch.tensor([1 - side / N, -(1 - side / N)], dtype=torch.float64))
    assert box_mass(prob, centre, side) == pytest.approx(1.0)


def test_maps_of_different_scales_in_one_call_match_one_at_a_time() -> None:
    prob = torch.stack([blobs((5, 30, 3, 0.7), (44, 3, 6, 0.3)), blobs((20, 20, 10, 0.5), (2, 2, 2, 0.5))])
    scales = torch.tensor([0.1, 0.6], dtype=torch.float64)
    together = peak_translation(prob, scales)
    for k in range(2):
        torch.testing.assert_close(together[k], peak_translation(prob[k], scales[k]))


def test_the_gradient_reaches_only_the_covered_pixels() -> None:
    prob = blobs((8, 8, 4, 0.6), (40, 44, 4, 0.4)).requires_grad_(True)
    peak_translation(prob, torch.tensor(0.2, dtype=torch.float64)).sum().backward()
    assert prob.grad is not None
    assert float(prob.grad[8:12, 8:12].abs().sum()) > 0
    assert float(prob.grad[40:44, 44:48].abs().sum()) == 0.0


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="one scale per map"):
        peak_translation(torch.full((2, 4, 4), 1 / 16), torch.tensor([0.5]))
