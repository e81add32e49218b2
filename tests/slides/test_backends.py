"""OpenSlide and tiffslide backends on tiny pyramidal TIFFs written by the tests (conftest ``tiny_tiff``).

Covers: backend choice by level count (a backend that cannot see more levels is not opened), level
sizes and downsamples, mpp, exact pixels on lossless files, outside/negative reads black, RGBA/grey/16-bit/
float conversion, concurrent reads equal serial reads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magnet.errors import SlideError
from magnet.slides import OpenSlideSlide, TiffSlide, open_slide

BACKENDS = {"openslide": OpenSlideSlide, "tiffslide": TiffSlide}


def test_generic_pages_tiff_opens_with_openslide_and_all_levels(tiny_tiff) -> None:
    path, levels = tiny_tiff(mpp=0.25)
    with open_slide(path) as slide:
        assert slide.backend == "openslide"  # both see 3 levels: the tie goes to the first registered
        assert slide.vendor == "generic-tiff"
        assert slide.level_dimensions == ((128, 96), (64, 48), (32, 24))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert slide.mpp == pytest.approx((0.25, 0.25))
        assert dict(slide.associated_images) == {}


def test_subifd_pyramid_goes_to_tiffslide(tiny_tiff) -> None:
    path, _ = tiny_tiff(layout="subifds", compression="jpeg")
    with OpenSlideSlide(str(path)) as alone:
        assert alone.level_count == 1  # OpenSlide does not follow SubIFDs
    with open_slide(path) as slide:
        assert slide.backend == "tiffslide"
        assert slide.level_dimensions == ((128, 96), (64, 48), (32, 24))
        assert slide.mpp is None


def test_a_backend_that_cannot_see_more_levels_is_not_opened(tiny_tiff, tmp_path: Path, monkeypatch) -> None:
    from magnet.slides import registry
    from magnet.slides.tiff_backend import tiffslide_level_bound

    pages, _ = tiny_tiff(name="pages.tif")
    subifds, _ = tiny_tiff(name="subifds.tif", layout="subifds", compression="jpeg")
    assert tiffslide_level_bound(str(pages)) == 3 and tiffslide_level_bound(str(subifds)) == 3
    not_tiff = tmp_path / "not.tif"
    not_tiff.write_bytes(b"plain text, not a TIFF")
    assert tiffslide_level_bound(str(not_tiff)) > 1000  # unknown: the opener must decide and say why
    calls: list[str] = []

    def counted(name: str, opener):  # type: ignore[no-untyped-def]
        def open_counted(path: str):  # type: ignore[no-untyped-def]
            calls.append(name)
            return opener(path)
        return open_counted

    monkeypatch.setattr(registry, "_FILE_BACKENDS", [(n, counted(n, o)) for n, o in registry._FILE_BACKENDS])
    with open_slide(pages) as slide:  # OpenSlide sees all 3 levels: tiffslide could only tie
        assert slide.backend == "openslide" and calls == ["openslide"]
    calls.clear()
    with open_slide(subifds) as slide:  # OpenSlide sees 1 of 3: tiffslide is opened and wins
        assert slide.backend == "tiffslide" and calls == ["openslide", "tiffslide"]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_lossless_levels_read_back_exactly(tiny_tiff, backend: str) -> None:
    path, levels = tiny_tiff(compression="zlib")
    with BACKENDS[backend](str(path)) as slide:
        for level, expected in enumerate(levels):
            h, w = expected.shape[:2]
            np.testing.assert_array_equal(slide.read_region((0, 0), level, (w, h)), expected)
        # level 1, location in level-0 pixels: (40, 20) is (20, 10) on level 1
        np.testing.assert_array_equal(slide.read_region((40, 20), 1, (30, 25)), levels[1][10:35, 20:50])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_outside_and_negative_reads_are_black(tiny_tiff, backend: str) -> None:
    path, levels = tiny_tiff(compression="zlib")
    with BACKENDS[backend](str(path)) as slide:
        region = slide.read_region((-20, -10), 0, (50, 40))
        assert region.shape == (40, 50, 3) and region.dtype == np.uint8
        assert not region[:10].any() and not region[:, :20].any()
        np.testing.assert_array_equal(region[10:, 20:], levels[0][:30, :30])
        corner = slide.read_region((120, 90), 0, (20, 20))
        np.testing.assert_array_equal(corner[:6, :8], levels[0][90:, 120:])
        assert not corner[6:].any() and not corner[:, 8:].any()
        assert not slide.read_region((1000, -500), 2, (7, 5)).any()


def test_tiffslide_floors_level_coordinates(tiny_tiff) -> None:
    path, levels = tiny_tiff(compression="zlib")
    with TiffSlide(str(path)) as slide:
        region = slide.read_region((-3, 5), 1, (10, 10))  # level 1: x = floor(-1.5) = -2, y = floor(2.5) = 2
        assert not region[:, :2].any()
        np.testing.assert_array_equal(region[:, 2:], levels[1][2:12, :8])


def test_jpeg_tiff_within_jpeg_error(tiny_tiff) -> None:
    path, levels = tiny_tiff(compression="jpeg")
    for backend in BACKENDS.values():
        with backend(str(path)) as slide:
            got = slide.read_region((0, 0), 0, (128, 96)).astype(np.int16)
            assert np.abs(got - levels[0]).mean() < 4.0


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_concurrent_reads_equal_serial_reads(tiny_tiff, make_image, backend: str) -> None:
    path, _ = tiny_tiff(image=make_image(512, 384, seed=3), compression="jpeg", levels=3, tile=64)
    rng = np.random.default_rng(0)
    jobs = [
        ((int(rng.integers(-50, 500)), int(rng.integers(-50, 380))), int(rng.integers(0, 3)), (47, 33))
        for _ in range(48)
    ]
    with BACKENDS[backend](str(path)) as slide:
        serial = [slide.read_region(*job) for job in jobs]
        with ThreadPoolExecutor(max_workers=4) as pool:
            parallel = list(pool.map(lambda job: slide.read_region(*job), jobs))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_rgba_tiff_is_composited_on_black(tiny_tiff, make_image, backend: str) -> None:
    rgba = make_image(128, 96, channels=4)
    path, _ = tiny_tiff(image=rgba, levels=1)
    with BACKENDS[backend](str(path)) as slide:
        got = slide.read_region((0, 0), 0, (128, 96)).astype(np.int16)
    expected = rgba[..., :3].astype(np.float64) * rgba[..., 3:] / 255.0
    assert np.abs(got - expected).max() <= 2
    assert not got[:, 100:].any()  # alpha 0 on the right quarter -> black


@pytest.mark.parametrize(
    "dtype, channels",
    [(np.uint8, 1), (np.uint16, 1), (np.uint16, 3), (np.float32, 1)],
)
def test_grey_and_deep_tiffs_convert(tiny_tiff, make_image, dtype: type, channels: int) -> None:
    image = make_image(128, 96, channels=channels, dtype=dtype)
    path, _ = tiny_tiff(image=image, levels=2)
    with open_slide(path) as slide:  # float32: only tiffslide reads it; the others via OpenSlide
        got = slide.read_region((0, 0), 0, (128, 96)).astype(np.int16)
    scale = 255.0 if dtype == np.float32 else 255.0 / np.iinfo(dtype).max
    expected = image.astype(np.float64) * scale
    if channels == 1:
        expected = np.repeat(expected[..., None], 3, axis=2)
        assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    assert np.abs(got - expected).max() <= 1


def test_plain_images_convert(tmp_path: Path, make_image) -> None:
    cases = {
        "rgba.png": Image.fromarray(make_image(40, 30, channels=4), "RGBA"),
        "grey.png": Image.fromarray(make_image(40, 30, channels=1), "L"),
        "grey16.png": Image.fromarray(make_image(40, 30, channels=1, dtype=np.uint16)),
        "rgb.jpg": Image.fromarray(make_image(40, 30)),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        with open_slide(tmp_path / name) as slide:
            assert slide.backend == "memory" and slide.dimensions == (40, 30)
            region = slide.read_region((-5, -5), 0, (50, 40))
            assert region.shape == (40, 50, 3) and region.dtype == np.uint8
            assert not region[:5].any()
    with open_slide(tmp_path / "rgba.png") as slide:
        assert not slide.read_region((35, 0), 0, (5, 30)).any()  # transparent right side -> black


def test_read_after_close_fails_cleanly(tiny_tiff) -> None:
    path, _ = tiny_tiff()
    slide = OpenSlideSlide(str(path))
    slide.close()
    slide.close()  # closing twice is harmless
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (4, 4))


def test_thumbnail_fits_requested_size(tiny_tiff) -> None:
    path, _ = tiny_tiff()
    with open_slide(path) as slide:
        thumb = slide.thumbnail(64)
    assert thumb.shape == (48, 64, 3) and thumb.dtype == np.uint8
