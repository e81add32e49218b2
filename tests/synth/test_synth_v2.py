"""Version 2 of the generator (``version=2``): lymph-node anatomy and benign look-alikes of lesions."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

import magnet.synth  # noqa: F401 - registers the synth: scheme
from magnet.data.lesions import lesion_class_for_extent
from magnet.errors import SlideError
from magnet.slides.registry import open_slide
from magnet.synth import VirtualSlide, parse_uri
from magnet.synth.lookalikes import EXTENT_RANGE_UM, KINDS
from magnet.synth.node_colours import MATCHED

# 10 mm slides at 0.5 um/px (20x): room for a node with follicles and sinuses; the texture banks at 20x take
# a quarter of the pixels of 40x, which keeps these tests quick.
MICRO = "synth:seed=11,size=20000x20000,lesion=micro,mpp=0.5,version=2"
NEGATIVE = "synth:seed=4,size=20000x20000,lesion=negative,mpp=0.5,version=2"


def test_uri_round_trip_with_version() -> None:
    spec = parse_uri("synth:version=2,lesion=itc,seed=3")
    assert spec.version == 2 and spec.uri == "synth:seed=3,size=100000x100000,lesion=itc,version=2"
    assert parse_uri(spec.uri) == spec
    assert parse_uri("synth:seed=3,version=1").uri == parse_uri("synth:seed=3").uri  # v1 writes no key
    slide = VirtualSlide(MICRO)
    assert slide.path == MICRO and slide.version == 2 and VirtualSlide("synth:seed=3").lookalikes == []


@pytest.mark.parametrize("value", ["5", "0", "two", "1.0", "02"])
def test_bad_version_is_a_one_line_slide_error(value: str) -> None:
    uri = f"synth:seed=1,version={value}"
    with pytest.raises(SlideError) as info:
        open_slide(uri)
    message = str(info.value)
    assert "version must be one of 1, 2, 3, 4" in message and "\n" not in message and message.startswith(uri)


def test_same_uri_same_pixels() -> None:
    a, b = VirtualSlide(MICRO), VirtualSlide(MICRO)
    cx, cy = (int(v) for v in a.lesions[0].mean(0))
    for level in (0, 1, 2):
        d = int(a.level_downsamples[level])
        first = a.read_region((cx - 100 * d, cy - 80 * d), level, (200, 160))
        assert np.array_equal(first, b.read_region((cx - 100 * d, cy - 80 * d), level, (200, 160)))
    other = VirtualSlide(MICRO.replace("seed=11", "seed=12"))
    assert not np.array_equal(other.read_region((cx - 100, cy - 80), 0, (200, 160)), first)


def test_lesions_follow_the_camelyon17_classes() -> None:
    for lesion in ("micro", "itc", "negative"):
        slide = VirtualSlide(MICRO.replace("lesion=micro", f"lesion={lesion}"))
        assert slide.lesion_class == lesion and slide.label == int(lesion != "negative")
        if slide.lesions:
            assert lesion_class_for_extent(max(slide.lesion_extents_um)) == lesion
    # Version 2 keeps version 1's lesion shapes and sizes (it may move them to the outer node).
    v1, v2 = VirtualSlide(MICRO.replace(",version=2", "")), VirtualSlide(MICRO)
    assert v1.lesion_extents_um == v2.lesion_extents_um
    for a, b in zip(v1.lesions, v2.lesions, strict=True):
        assert np.allclose(a - a.mean(0), b - b.mean(0))


def _inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    return PolygonPath(polygon).contains_points(points)


def test_lookalikes_on_negative_slides_inside_tissue_and_in_their_size_range() -> None:
    slide = VirtualSlide("synth:seed=4,lesion=negative,version=2")  # a default-size negative slide
    items = slide.lookalikes
    assert {item.kind for item in items} == set(KINDS)
    assert {item.mimics for item in items} == {"macro", "micro", "itc"}
    sections = [section.polygon() for section in slide.layout.sections]
    lesions = slide.lesions
    for item in items:
        polygon = item.polygon
        assert polygon.ndim == 2 and polygon.shape[1] == 2 and polygon.dtype == np.float64
        lo, hi = EXTENT_RANGE_UM[(item.kind, item.mimics)]
        assert lo <= item.extent_um <= hi and lesion_class_for_extent(item.extent_um) == item.mimics
        diameter = np.sqrt(((polygon[:, None] - polygon[None]) ** 2).sum(-1)).max() * slide.spec.mpp
        assert diameter == pytest.approx(item.extent_um)
        assert any(_inside(section, polygon).all() for section in sections)
        assert not any(_inside(lesion, polygon).any() for lesion in lesions)


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    h, w, _ = image.shape
    return image[: h // k * k, : w // k * k].reshape(h // k, k, w // k, k, 3).astype(float).mean((1, 3))


def test_coarse_levels_are_the_area_average_of_level_0() -> None:
    slide = VirtualSlide(MICRO)
    # 1 mm around the lesion's edge: lesion, follicles, sinus, maybe medulla, capsule, fat and glass.
    x0, y0 = (int(v) // 64 * 64 - 1024 for v in slide.lesions[0][0])
    level0 = slide.read_region((x0, y0), 0, (2048, 2048))
    for d in (4, 16, 64):
        coarse = slide.render(x0, y0, d, 2048 // d, 2048 // d).astype(float)
        averaged = _block_mean(level0, d)
        # At the bank scales (4, 16) exact; coarser, every compartment takes its bank's mean, and 1 mm of
        # fat (70 um cells) or medulla (cords and sinuses) holds only a few texture blocks: a wider margin.
        tolerance = 2.0 if d < 64 else 3.5
        assert np.abs(coarse.mean((0, 1)) - averaged.mean((0, 1))).max() <= tolerance, d
        assert np.abs(coarse - averaged).mean() < (6.0 if d < 64 else 9.0), d


def test_lookalikes_have_the_carcinoma_mean_colour() -> None:
    slide = VirtualSlide(NEGATIVE)
    slide.read_region((0, 0), 0, (1, 1))  # loads the banks and the colours
    renderer = slide._renderer
    tumour = renderer._mean("tumour")  # type: ignore[attr-defined]
    for name in MATCHED:
        assert np.abs(renderer._mean(name) - tumour).max() < 0.01  # type: ignore[attr-defined]
    # and it shows in pixels: a germinal centre and a lesion at 16 um/px have about the same mean colour
    micro = VirtualSlide(MICRO)
    d = 32.0  # 16 um/px

    def inside_mean(s: VirtualSlide, polygon: np.ndarray) -> np.ndarray:
        (x_lo, y_lo), (x_hi, y_hi) = polygon.min(0), polygon.max(0)
        w, h = int((x_hi - x_lo) / d) + 1, int((y_hi - y_lo) / d) + 1
        image = s.render(x_lo, y_lo, d, w, h).astype(float)
        xs, ys = x_lo + (np.arange(w) + 0.5) * d, y_lo + (np.arange(h) + 0.5) * d
        inside = _inside(polygon, np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)).reshape(h, w)
        return image[inside].mean(0)

    # The median over the larger germinal centres: one of them may lie under a fold or a thicker part.
    centres = [i.polygon for i in micro.lookalikes if i.kind == "germinal_centre" and i.extent_um > 300]
    typical = np.median([inside_mean(micro, polygon) for polygon in centres], 0)
    assert np.abs(inside_mean(micro, micro.lesions[0]) - typical).max() < 8.0
