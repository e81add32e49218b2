"""Version 4 of the generator: version 3 with a nest pattern on some lesions and fewer look-alikes."""

from __future__ import annotations

import numpy as np
import pytest

from magnet.synth import VirtualSlide
from magnet.synth.anatomy import make_node_layout_v3
from magnet.synth.nests import MOTTLED_LESIONS, MOTTLED_LOOKALIKES, NEST_UM, NestPattern, mottled_shapes
from magnet.synth.uri import SynthSpec

MPP = 0.25
MICRO = "synth:seed=11,size=20000x20000,lesion=micro,mpp=0.5,version=4"


def _reference_field(pattern: NestPattern, x: float, y: float, d: float, n: int = 64) -> float:
    """The pattern averaged over a pixel's square by brute force: ``n`` x ``n`` sub-samples."""
    offsets = (np.arange(n) + 0.5) / n * d - d / 2
    us, vs = np.meshgrid(x + offsets, y + offsets)
    waves = [np.cos(kx * us + ky * vs + p) for (kx, ky), p in zip(pattern.waves, pattern.phases, strict=True)]
    return float(np.mean(waves))


@pytest.mark.parametrize("d", [1.0, 4.0, 32.0, 128.0])
def test_each_pixel_holds_the_patterns_mean_over_its_square(d: float) -> None:
    pattern = NestPattern.for_slide(7, MPP)
    xs, ys = 1000.0 + (np.arange(5) + 0.5) * d, 3000.0 + (np.arange(4) + 0.5) * d
    field = pattern.field(xs, ys, d)
    reference = np.array([[_reference_field(pattern, x, y, d) for x in xs] for y in ys])
    assert field.shape == (4, 5)
    assert np.abs(field - reference).max() < 2e-3


def test_the_pattern_shows_at_8_to_16_um_per_px_and_fades_at_a_thumbnails_scale() -> None:
    amplitude = {}
    for um in (MPP, 8.0, 16.0, 32.0, 64.0):
        d = um / MPP
        ranges = []
        for seed in range(20):
            xs = ys = (np.arange(64) + 0.5) * d
            ranges.append(float(np.abs(NestPattern.for_slide(seed, MPP).field(xs, ys, d)).max()))
        amplitude[um] = max(ranges)
    assert 0.9 < amplitude[MPP] <= 1.0  # three crests meet: (1 + 1 + 1) / 3
    assert amplitude[8.0] > 0.6 * amplitude[MPP] and amplitude[16.0] > 0.6 * amplitude[MPP]
    assert amplitude[32.0] < 0.3 * amplitude[MPP] and amplitude[64.0] < 0.15 * amplitude[MPP]
    # the wavelength is what the module says: zero mean over a whole number of periods along a wave
    pattern = NestPattern.for_slide(3, MPP)
    kx, ky = pattern.waves[0]
    assert np.isclose(2 * np.pi / np.hypot(kx, ky) * MPP, NEST_UM)


def test_version_4_is_version_3_plus_the_pattern_inside_mottled_shapes_only() -> None:
    v3, v4 = VirtualSlide(MICRO.replace("version=4", "version=3")), VirtualSlide(MICRO)
    assert [s.tolist() for s in v3.lesions] == [s.tolist() for s in v4.lesions]
    assert [(a.kind, a.polygon.tolist()) for a in v3.lookalikes] == [
        (a.kind, a.polygon.tolist()) for a in v4.lookalikes
    ]
    mottled = v4._renderer.mottled  # type: ignore[attr-defined]
    assert mottled, "this seed mottles at least one shape"
    assert v3.nested == [] and [p.tolist() for p in v4.nested] == [s.polygon().tolist() for s in mottled]
    shape = mottled[0]
    d = 8.0  # 4 um/px: a bank scale, textured
    x0, y0 = shape.cx - 100 * d, shape.cy - 100 * d
    a = v3.render(x0, y0, d, 200, 200).astype(int)
    b = v4.render(x0, y0, d, 200, 200).astype(int)
    xs, ys = x0 + (np.arange(200) + 0.5) * d, y0 + (np.arange(200) + 0.5) * d
    inside = np.zeros((200, 200), bool)
    for other in mottled:
        hit = other.window(xs, ys, d)
        if hit is not None:
            rows, cols, cov = hit
            inside[rows, cols] |= cov > 0
    changed = (a != b).any(-1)
    assert changed.any() and not changed[~inside].any()
    assert np.abs(a - b).max() <= 45  # NEST_CONTRAST at a crest, not a new tissue


def test_a_negative_twin_mottles_the_same_lookalikes() -> None:
    for seed in range(40, 46):
        negative = VirtualSlide(f"synth:seed={seed},size=32768x32768,lesion=negative,version=4")
        itc = VirtualSlide(f"synth:seed={seed},size=32768x32768,lesion=itc,version=4")
        twin = mottled_shapes(seed, [], [a.shape for a in itc.layout.lookalikes])  # type: ignore[attr-defined]
        ours = mottled_shapes(seed, [], [a.shape for a in negative.layout.lookalikes])  # type: ignore[attr-defined]
        assert [(s.cx, s.cy) for s in twin] == [(s.cx, s.cy) for s in ours]


def test_shares_of_mottled_lesions_and_lookalikes() -> None:
    lesions = lookalikes = mottled_lesions = mottled_lookalikes = 0
    for seed in range(120):
        layout = make_node_layout_v3(SynthSpec(seed, (32768, 32768), "micro", MPP, version=4))
        lesion_shapes = [lesion.shape for lesion in layout.lesions]
        lookalike_shapes = [item.shape for item in layout.lookalikes]
        shapes = mottled_shapes(seed, lesion_shapes, lookalike_shapes)
        lesions, lookalikes = lesions + len(lesion_shapes), lookalikes + len(lookalike_shapes)
        mottled_lesions += sum(any(s is m for m in shapes) for s in lesion_shapes)
        mottled_lookalikes += sum(any(s is m for m in shapes) for s in lookalike_shapes)
    assert lesions > 150 and lookalikes > 1500
    assert abs(mottled_lesions / lesions - MOTTLED_LESIONS) < 0.1  # about 3.4 standard errors
    assert abs(mottled_lookalikes / lookalikes - MOTTLED_LOOKALIKES) < 0.03


def test_coarse_levels_are_still_the_area_average_of_level_0() -> None:
    slide = VirtualSlide(MICRO)
    shape = slide._renderer.mottled[0]  # type: ignore[attr-defined]
    x0, y0 = int(shape.cx) // 64 * 64 - 512, int(shape.cy) // 64 * 64 - 512
    level0 = slide.read_region((x0, y0), 0, (1024, 1024)).astype(float)
    for d in (4, 16, 64):
        coarse = slide.render(x0, y0, d, 1024 // d, 1024 // d).astype(float)
        averaged = level0.reshape(1024 // d, d, 1024 // d, d, 3).mean((1, 3))
        tolerance = 2.0 if d < 64 else 3.5  # as version 2's (tests/synth/test_synth_v2.py)
        assert np.abs(coarse.mean((0, 1)) - averaged.mean((0, 1))).max() <= tolerance, d
