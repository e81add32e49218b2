"""Pixels of virtual slides: determinism, ground truth against pixels, cross-level consistency."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

import magnet.synth  # noqa: F401 - registers the synth: scheme
from magnet.data.lesions import LESION_CLASSES
from magnet.synth import VirtualSlide, lesion_class_for_extent

MICRO = "synth:seed=11,size=8192x8192,lesion=micro"
ITC = "synth:seed=6,size=8192x8192,lesion=itc"


def _digest(uri: str) -> str:
    slide = VirtualSlide(uri)
    cx, cy = slide.lesions[0].mean(0) if slide.lesions else (4000, 4000)
    region = slide.read_region((int(cx) - 300, int(cy) - 200), 0, (320, 240))
    return hashlib.sha256(region.tobytes()).hexdigest()


def test_same_uri_same_pixels_across_processes() -> None:
    here = _digest(MICRO)
    assert here == _digest(MICRO)
    code = (
        "import sys; sys.path.insert(0, 'tests/synth'); "
        "from test_synth_render import _digest, MICRO; print(_digest(MICRO))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here
    assert _digest("synth:seed=12,size=8192x8192,lesion=micro") != here


def test_region_shape_dtype_and_black_outside() -> None:
    slide = VirtualSlide(ITC)
    region = slide.read_region((-100, 8000), 0, (300, 400))
    assert region.shape == (400, 300, 3) and region.dtype == np.uint8
    assert not region[:, :100].any() and not region[192:].any()
    assert region[:192, 100:].min() > 0  # glass or tissue inside the slide
    whole = slide.read_region((0, 0), 2, slide.level_dimensions[2])
    assert whole.shape == (512, 512, 3)


def test_ground_truth_classes_follow_the_camelyon17_sizes() -> None:
    assert lesion_class_for_extent(2001) == "macro" and lesion_class_for_extent(2000) == "micro"
    assert lesion_class_for_extent(200.5) == "micro" and lesion_class_for_extent(200) == "itc"
    for lesion in LESION_CLASSES:
        size = "60000x60000" if lesion == "macro" else "8192x8192"
        slide = VirtualSlide(f"synth:seed=21,size={size},lesion={lesion}")
        assert slide.lesion_class == lesion and slide.label == int(lesion != "negative")
        assert (len(slide.lesions) == 0) == (lesion == "negative")
        if slide.lesions:
            extents = slide.lesion_extents_um
            assert lesion_class_for_extent(max(extents)) == lesion and extents[0] == max(extents)
            polygon = slide.lesions[0]
            assert polygon.ndim == 2 and polygon.shape[1] == 2 and polygon.dtype == np.float64
            diameter = np.sqrt(((polygon[:, None] - polygon[None]) ** 2).sum(-1)).max() * 0.25
            assert diameter == pytest.approx(extents[0])


def _masks(slide: VirtualSlide, x0: int, y0: int, d: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside any lesion, inside tissue) for the pixel centres of a region."""
    xs = x0 + (np.arange(w) + 0.5) * d
    ys = y0 + (np.arange(h) + 0.5) * d
    points = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    lesion = np.zeros(len(points), bool)
    for polygon in slide.lesions:
        lesion |= PolygonPath(polygon).contains_points(points)
    tissue = np.zeros(len(points), bool)
    for section in slide.layout.sections:
        tissue |= PolygonPath(section.polygon()).contains_points(points)
    return lesion.reshape(h, w), tissue.reshape(h, w)


@pytest.mark.parametrize(("uri", "level"), [(MICRO, 1), (ITC, 0)])
def test_lesion_pixels_look_like_tumour_and_the_rest_like_parenchyma(uri: str, level: int) -> None:
    slide = VirtualSlide(uri)
    d = int(slide.level_downsamples[level])
    polygon = slide.lesions[0]
    (x_lo, y_lo), (x_hi, y_hi) = polygon.min(0), polygon.max(0)
    margin = 0.3 * (x_hi - x_lo) + 100
    x0, y0 = int(x_lo - margin), int(y_lo - margin)
    w, h = int((x_hi - x_lo + 2 * margin) / d), int((y_hi - y_lo + 2 * margin) / d)
    # Every 3rd pixel is plenty, and keeps the polygon tests fast.
    region = slide.read_region((x0, y0), level, (w, h))[1::3, 1::3].astype(float)
    lesion, tissue = _masks(slide, x0 + d, y0 + d, 3 * d, region.shape[1], region.shape[0])
    inside, outside = lesion & tissue, tissue & ~lesion
    assert inside.sum() > 200 and outside.sum() > 200
    tumour, normal = region[inside], region[outside]
    # Carcinoma is paler (in red) and pinker than the lymphocyte-dense parenchyma ...
    assert tumour[:, 0].mean() > normal[:, 0].mean() + 5
    assert (tumour[:, 0] - tumour[:, 2]).mean() > (normal[:, 0] - normal[:, 2]).mean() + 6
    # ... and lacks its many small dark nuclei (at level 0, where they are resolved).
    if level == 0:
        dark = lambda px: (px.mean(1) < 110).mean()  # noqa: E731
        assert dark(normal) > 1.5 * dark(tumour)


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    h, w, _ = image.shape
    return image[: h // k * k, : w // k * k].reshape(h // k, k, w // k, k, 3).astype(float).mean((1, 3))


@pytest.mark.parametrize("uri", [MICRO, ITC])
def test_coarse_levels_are_the_area_average_of_level_0(uri: str) -> None:
    slide = VirtualSlide(uri)
    cx, cy = slide.lesions[0].mean(0)
    # A 2048 px square around the lesion: tissue, lesion edges, follicles, maybe capsule and glass.
    x0, y0 = int(cx) // 64 * 64 - 1024, int(cy) // 64 * 64 - 1024
    level0 = slide.read_region((x0, y0), 0, (2048, 2048))
    for d in (4, 16, 64):
        coarse = slide.render(x0, y0, d, 2048 // d, 2048 // d).astype(float)
        averaged = _block_mean(level0, d)
        assert np.abs(coarse.mean((0, 1)) - averaged.mean((0, 1))).max() <= 2.0, d
        # Visually the same: pixel by pixel close. Coarser than the texture banks (64) a pixel takes the
        # texture's mean, while a 64 px block of level 0 holds only a few cells: a larger tolerance there.
        assert np.abs(coarse - averaged).mean() < (6.0 if d < 64 else 9.0), d
    level2 = slide.read_region((x0, y0), 2, (128, 128)).astype(float)
    assert np.abs(level2 - _block_mean(level0, 16)).mean() < 6.0


def test_any_downsample_renders_and_matches_the_pyramid() -> None:
    slide = VirtualSlide(MICRO)
    view = slide.render(0, 0, 8192 / 112, 112, 112)
    assert view.shape == (112, 112, 3)
    cx, cy = (int(v) for v in slide.lesions[0].mean(0))
    fine = slide.render(cx, cy, 8.0, 256, 256).astype(float)  # between bank scales: drawn at 4, averaged
    assert np.abs(_block_mean(slide.render(cx, cy, 4.0, 512, 512), 2) - fine).mean() < 1.0
    whole = slide.render(0, 0, 8.0, 1024, 1024).astype(float)
    assert np.abs(whole.mean((0, 1)) - view.astype(float).mean((0, 1))).max() < 3.0


def test_star_depth_just_below_the_zero_angle_does_not_overflow() -> None:
    # Regression: in float32, (-tiny) % K rounds to exactly K, which indexed past the radius table (a demo
    # evaluation crashed on such a pixel).
    import numpy as np

    from magnet.synth.shapes import StarShape

    star = StarShape(0.0, 0.0, np.full(64, 100.0))
    depth = star.depth(np.array([50.0, 1e4]), np.array([-1e-4, -1e-8, 0.0, 1e-4]))
    assert depth.shape == (4, 2)
    assert np.allclose(depth[:, 0], 50.0, atol=1e-3) and np.allclose(depth[:, 1], 100.0 - 1e4, rtol=1e-5)


@pytest.mark.parametrize("saturate", [1.0, 37.5, 400.0])
def test_star_depth_saturated_agrees_with_the_full_depth_once_clipped(saturate: float) -> None:
    # ``saturate`` skips the angle of pixels far inside or outside: clipped to [-s, s] nothing may change.
    from magnet.synth.shapes import make_star

    star = make_star(np.random.default_rng(4), 0.0, 0.0, 1000.0, 0.6, 0.4)
    xs = np.linspace(-1500.0, 1500.0, 150)  # 22,500 pixels: above the size where masking starts
    ys = np.linspace(-1400.0, 1400.0, 150)
    full = np.clip(star.depth(xs, ys), -saturate, saturate)
    fast = star.depth(xs, ys, saturate=saturate)
    assert np.array_equal(np.clip(fast, -saturate, saturate), full)
    assert (np.abs(full) < saturate).any() and (np.abs(full) >= saturate).mean() > 0.3  # both paths used
