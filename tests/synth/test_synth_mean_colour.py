"""Slide-level colour does not give the label: a lesion moves a slide's mean colour much less than the
per-slide stain variation does (the 200-slide AUROC check is in bench/bench_synth.py)."""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolygonPath

from magnet.synth import VirtualSlide

SIDE = 128  # thumbnail pixels


def _thumbnail(slide: VirtualSlide) -> tuple[np.ndarray, float]:
    d = max(slide.dimensions) / SIDE
    return slide.render(0, 0, d, SIDE, SIDE).astype(float), d


def _tissue(image: np.ndarray) -> np.ndarray:
    """A simple grey filter: stained pixels are coloured (max - min channel) and not white."""
    return (image.max(-1) - image.min(-1) > 18) & (image.mean(-1) < 225)


def test_lesions_shift_the_mean_colour_less_than_the_stain_varies() -> None:
    means, shifts = [], []
    for seed in range(12):
        slide = VirtualSlide(f"synth:seed={seed},lesion=macro")
        image, d = _thumbnail(slide)
        tissue = _tissue(image)
        centres = (np.arange(SIDE) + 0.5) * d
        points = np.stack(np.meshgrid(centres, centres), -1).reshape(-1, 2)
        lesion = np.zeros(len(points), bool)
        for polygon in slide.lesions:
            lesion |= PolygonPath(polygon).contains_points(points)
        lesion = lesion.reshape(SIDE, SIDE) & tissue
        assert 0 < lesion.sum() < 0.25 * tissue.sum()  # lesions are small against the tissue
        mean_all = image[tissue].mean(0)
        means.append(mean_all)
        shifts.append(np.abs(mean_all - image[tissue & ~lesion].mean(0)))
    spread = np.std(means, axis=0)
    # The mean shift a macro-metastasis causes is well inside the slide-to-slide spread of every channel.
    assert (np.mean(shifts, axis=0) < 0.5 * spread).all(), (np.mean(shifts, axis=0), spread)
