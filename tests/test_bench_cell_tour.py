"""``bench/cell_tour.py``'s geometry: where each cell of a box's CNN map lies on the slide, and the tour of
the best cells that keeps its looks apart before it lets them overlap."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    from cell_tour import cell_centres, tour
finally:
    sys.path.pop(0)


def test_cell_centres_follow_the_maps_order_rows_then_columns() -> None:
    boxes = np.array([[0.0, 0.0, 40.0, 20.0], [100.0, 200.0, 120.0, 220.0]])
    centres = cell_centres(boxes, height=2, width=4)
    assert centres.shape == (2 * 2 * 4, 2)
    # box 0, row 0: x steps by a quarter of 40, y at a quarter of 20
    np.testing.assert_allclose(centres[:4], [[5, 5], [15, 5], [25, 5], [35, 5]])
    np.testing.assert_allclose(centres[4], [5, 15])  # box 0, row 1, column 0
    np.testing.assert_allclose(centres[8], [102.5, 205])  # box 1's first cell


def test_tour_keeps_looks_a_side_apart_then_fills_in_by_score() -> None:
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0], [30.0, 0.0]])
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    # a side of 5: the best cell, the next one 5 away (10), then 30; the close ones only once every
    # distinct spot has a look
    np.testing.assert_array_equal(tour(centres, scores, 3, 5.0), centres[[0, 2, 4]])
    np.testing.assert_array_equal(tour(centres, scores, 5, 5.0), centres[[0, 2, 4, 1, 3]])
    assert len(tour(centres, scores, 9, 5.0)) == 5  # never the same cell twice
