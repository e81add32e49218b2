"""Localisation metrics (docs/method.md §5): hits with the patch-size cap, lesion share, per-class summary."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from magnet.data.lesions import read_lesions
from magnet.metrics.localisation import (
    SlideLocalisation,
    lesion_mask,
    localisation_summary,
    slide_localisation,
)
from magnet.synth.dataset import make_dataset, write_dataset

SLIDE = (8000, 6000)  # width, height: longer side 8000, so hits need patches of side <= 1000
SQUARE = np.array([[2000.0, 2000.0], [3000.0, 2000.0], [3000.0, 3000.0], [2000.0, 3000.0]])


def square_box(x0: float, y0: float, side: float) -> list[float]:
    return [x0, y0, x0 + side, y0 + side]


def test_box_on_lesion_hits() -> None:
    result = slide_localisation([square_box(2400, 2400, 200)], SLIDE, [SQUARE])
    assert result.hit and result.lesion_share == pytest.approx(1.0)
    assert result.mean_patch_side == pytest.approx(200) and result.mean_patch_side_fraction == pytest.approx(
        0.025
    )
    assert result.eligible_share == 1.0 and result.n_lesions == 1
    # Overlapping only at a corner is still a hit; a box holding the whole lesion too.
    assert slide_localisation([square_box(2900, 2900, 300)], SLIDE, [SQUARE]).hit
    assert slide_localisation([square_box(1900, 1900, 1000)], SLIDE, [SQUARE]).hit


def test_box_too_large_does_not_hit_even_when_overlapping() -> None:
    boxes = [square_box(1500, 1500, 1001), [0, -1000, 8000, 7000]]  # just above 1/8, the whole slide
    result = slide_localisation(boxes, SLIDE, [SQUARE])
    assert not result.hit and result.eligible_share == 0.0
    assert result.lesion_share > 0  # they do cover the lesion, they are just too coarse to count


def test_box_away_from_lesion_and_concave_notch_do_not_hit() -> None:
    assert not slide_localisation([square_box(5000, 5000, 500)], SLIDE, [SQUARE]).hit
    # An L-shaped lesion: a box in its notch lies inside the bounding box but outside the lesion.
    ell = np.array([[0, 0], [1000, 0], [1000, 400], [400, 400], [400, 1000], [0, 1000]], float) + 2000
    result = slide_localisation([square_box(2600, 2600, 300)], SLIDE, [ell])
    assert not result.hit and result.lesion_share == 0.0
    # No lesions (a negative slide): never a hit, no lesion share.
    negative = slide_localisation([square_box(2400, 2400, 200)], SLIDE, [])
    assert not negative.hit and negative.lesion_share == 0.0 and negative.n_lesions == 0


def test_fine_hit_counts_only_patches_under_the_fine_cap() -> None:
    coarse, fine = square_box(2000, 2000, 800), square_box(5000, 5000, 100)  # coarse on the lesion, fine off
    result = slide_localisation([coarse, fine], SLIDE, [SQUARE], fine_side=200)
    assert result.hit and result.fine_hit is False
    on_lesion = slide_localisation([coarse, square_box(2500, 2500, 200)], SLIDE, [SQUARE], fine_side=200)
    assert on_lesion.fine_hit is True
    assert slide_localisation([coarse], SLIDE, [SQUARE]).fine_hit is None  # no cap given: unknown
    assert slide_localisation([fine], SLIDE, [], fine_side=200).fine_hit is False  # a negative slide


def test_fine_hit_takes_a_cap_per_box() -> None:
    # Both boxes on the lesion and of the same side; only the second's pixels hold fine enough detail.
    boxes = [square_box(2500, 2500, 200), square_box(2600, 2600, 200)]
    assert slide_localisation(boxes, SLIDE, [SQUARE], fine_side=np.array([150.0, 150.0])).fine_hit is False
    assert slide_localisation(boxes, SLIDE, [SQUARE], fine_side=np.array([150.0, 250.0])).fine_hit is True


def test_lesion_share_of_box_half_inside() -> None:
    five_sixths = slide_localisation([square_box(2500, 2200, 600)], SLIDE, [SQUARE])  # x: 500 of 600 inside
    assert five_sixths.lesion_share == pytest.approx(500 / 600, abs=0.01)
    exact_half = slide_localisation([[2500, 2000, 3500, 3000]], SLIDE, [SQUARE])
    assert exact_half.lesion_share == pytest.approx(0.5, abs=0.01)
    # Two boxes, one inside and one away: areas are summed per patch (3/4 of the area lies away).
    two = slide_localisation([[2100, 2100, 2600, 2600], [5000, 5000, 5866, 5866]], SLIDE, [SQUARE])
    assert two.lesion_share == pytest.approx(500**2 / (500**2 + 866**2), abs=0.01)
    # A box smaller than a grid cell (7.8 px here) inside the lesion still counts.
    tiny = slide_localisation([square_box(2500, 2500, 2)], SLIDE, [SQUARE])
    assert tiny.lesion_share == pytest.approx(1.0)


def test_lesion_mask_matches_disk_area() -> None:
    angles = 2 * np.pi * np.arange(200) / 200
    disk = np.stack([4000 + 1500 * np.cos(angles), 3000 + 1500 * np.sin(angles)], 1)
    mask, cell = lesion_mask([disk], SLIDE, grid_cells=512)
    assert mask.shape == (384, 512)
    assert mask.sum() * cell**2 == pytest.approx(math.pi * 1500**2, rel=0.01)
    # Union of overlapping polygons, not a double count.
    union, _ = lesion_mask([SQUARE, SQUARE + 500], SLIDE, grid_cells=800)
    assert union.sum() == 2 * 100**2 - 50**2  # 10 px cells: two 100² squares sharing a 50² corner


def test_accepts_tensors_and_is_fast() -> None:
    angles = 2 * np.pi * np.arange(64) / 64
    radius = 20000 * (1 + 0.2 * np.sin(5 * angles))
    big = np.stack([50000 + radius * np.cos(angles), 50000 + radius * np.sin(angles)], 1)
    boxes = torch.rand(18, 2, dtype=torch.float64) * 90000
    boxes = torch.cat([boxes, boxes + 3000], dim=1)
    slide_localisation(boxes, (100_000, 100_000), [big])  # warm up
    start = time.perf_counter()
    for _ in range(10):
        slide_localisation(boxes, (100_000, 100_000), [big, SQUARE * 10])
    per_slide = (time.perf_counter() - start) / 10
    assert per_slide < 0.05  # target 10 ms (bench-free sanity bound on a shared machine)


def test_reads_lesions_json(tmp_path) -> None:
    slides = [s for s in make_dataset(12, seed=3, size=(20000, 20000)) if s.lesions][:2]
    write_dataset(slides, tmp_path)
    lesions = read_lesions(tmp_path / "lesions.json")
    for slide in slides:
        polygon = lesions[slide.uri][0]
        centre = polygon.mean(axis=0)
        result = slide_localisation([[*(centre - 5), *(centre + 5)]], (20000, 20000), lesions[slide.uri])
        assert result.hit and result.lesion_share > 0.9


def test_summary_per_class() -> None:
    per_slide = [
        _fake(True, 0.5, 100),
        _fake(False, 0.0, 100),  # macro: 1 of 2
        _fake(True, 0.2, 300),  # micro: 1 of 1
        _fake(False, 0.0, 300),  # itc: 0 of 1
        _fake(False, 0.0, 500, lesions=0),  # negative
        _fake(False, 0.0, 500, lesions=0),  # positive without outlines: not in hit rates
    ]
    classes = ["macro", "macro", "micro", "itc", "negative", None]
    summary = localisation_summary(per_slide, classes)
    assert summary["hit_rate_macro"] == 0.5 and summary["n_macro"] == 2
    assert summary["hit_rate_micro"] == 1.0 and summary["hit_rate_itc"] == 0.0
    assert summary["hit_rate_macro_micro"] == pytest.approx(2 / 3)
    assert summary["hit_rate_all"] == 0.5 and summary["n_all"] == 4
    assert summary["lesion_share_macro"] == pytest.approx(0.25)
    assert summary["mean_patch_side"] == pytest.approx(300) and summary["n_slides"] == 6
    assert summary["hit_rate_fine_all"] is None  # no slide had a fine cap
    fine = [replace(s, fine_hit=s.hit) for s in per_slide[:3]] + per_slide[3:]
    fine_summary = localisation_summary(fine, classes)
    assert fine_summary["hit_rate_fine_macro"] == 0.5 and fine_summary["hit_rate_fine_micro"] == 1.0
    assert fine_summary["hit_rate_fine_itc"] is None  # the itc slide's fine hit is unknown
    assert fine_summary["hit_rate_fine_all"] == pytest.approx(2 / 3)
    empty = localisation_summary(per_slide[:2], ["macro", "macro"])
    assert empty["hit_rate_itc"] is None and empty["n_itc"] == 0
    with pytest.raises(ValueError, match="classes"):
        localisation_summary(per_slide, classes[:2])


def _fake(hit: bool, share: float, side: float, lesions: int = 1) -> SlideLocalisation:
    return SlideLocalisation(hit, share, side, side / 1000, 1.0, lesions)
