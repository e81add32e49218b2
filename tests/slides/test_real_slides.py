"""Every real slide of ``../shared/data/slides`` opens with the right geometry and pixels.

Reference numbers were read with OpenSlide 4.0.1 / tiffslide 3.0.1 and agree with the data README. The
generic pyramid TIFF and the OME-TIFF were derived from CMU-1-Small-Region.svs by re-encoding its pixels
as JPEG: they hold identical tiles (equal pixels), and differ from the SVS by JPEG error only (measured:
mean absolute difference 2.9 grey levels, PSNR 33 dB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tiffslide

from magnet.errors import SlideError
from magnet.slides import open_slide

SHARED_SLIDES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "slides").resolve()
pytestmark = pytest.mark.skipif(
    not SHARED_SLIDES.exists(),
    reason=f"real data folder {SHARED_SLIDES} is absent (lives beside the project)",
)

CMU_LEVELS = ((2220, 2967), (1110, 1483), (555, 741), (277, 370))
# name: (backend, vendor, level_dimensions, mpp (x, y), associated image names)
EXPECTED = {
    "CMU-1-Small-Region.svs": (
        "openslide",
        "aperio",
        CMU_LEVELS[:1],
        (0.499, 0.499),
        {"label", "macro", "thumbnail"},
    ),
    "TCGA-CR-7395-01A-01-TS1_reduced.svs": (
        "openslide",
        "aperio",
        ((4443, 3567), (2221, 1783)),
        None,
        {"thumbnail"},
    ),
    "camelyon16_lowres_multiframe.dcm": ("openslide", "dicom", ((1152, 700),), (28.969, 28.968), set()),
    "CMU-1-Small-Region_generic_pyramid_jpeg.tif": (
        "openslide",
        "generic-tiff",
        CMU_LEVELS,
        (0.499, 0.499),
        set(),
    ),
    "CMU-1-Small-Region_pyramid.ome.tif": ("tiffslide", "ome-tiff", CMU_LEVELS, (0.499, 0.499), set()),
}


def _library_read(name: str, backend: str, location: tuple[int, int], level: int, size: tuple[int, int]):
    path = str(SHARED_SLIDES / name)
    if backend == "openslide":
        with openslide.OpenSlide(path) as osr:
            rgba = np.asarray(osr.read_region(location, level, size))
        assert (rgba[..., 3] == 255).all()  # inside the slide: opaque, so RGB is the answer
        return rgba[..., :3]
    with tiffslide.TiffSlide(path) as ts:
        return ts.read_region(location, level, size, as_array=True)


def test_every_slide_file_is_covered() -> None:
    names = {p.name for p in SHARED_SLIDES.iterdir()}
    assert names == set(EXPECTED) | {"TCGA-XK-AAJU-01A-01-TS1_small_nonstandard.dcm"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_geometry_and_metadata(name: str) -> None:
    backend, vendor, dims, mpp, associated = EXPECTED[name]
    with open_slide(SHARED_SLIDES / name) as slide:
        assert slide.backend == backend
        assert slide.vendor == vendor
        assert slide.level_dimensions == dims
        w0, h0 = dims[0]
        expected_down = [(w0 / w + h0 / h) / 2 for w, h in dims]
        assert slide.level_downsamples == pytest.approx(expected_down)
        if mpp is None:
            assert slide.mpp is None
        else:
            assert slide.mpp == pytest.approx(mpp, abs=1e-6)
        assert set(slide.associated_images) == associated


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_region_equals_library_read(name: str) -> None:
    backend, _, dims, _, _ = EXPECTED[name]
    with open_slide(SHARED_SLIDES / name) as slide:
        for level in (0, len(dims) - 1):
            location, size = (101, 203), (150, 90)
            got = slide.read_region(location, level, size)
            np.testing.assert_array_equal(got, _library_read(name, backend, location, level, size))


def test_associated_images_are_rgb() -> None:
    with open_slide(SHARED_SLIDES / "CMU-1-Small-Region.svs") as slide:
        label = slide.associated_images["label"]
        assert label.shape == (463, 387, 3) and label.dtype == np.uint8
        assert slide.associated_images["thumbnail"].shape == (768, 574, 3)


def test_ome_tiff_is_read_by_tiffslide_with_four_levels() -> None:
    path = SHARED_SLIDES / "CMU-1-Small-Region_pyramid.ome.tif"
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_count == 1  # why the registry must prefer tiffslide here
    with open_slide(path) as slide:
        assert (slide.backend, slide.level_count) == ("tiffslide", 4)


def test_derived_tiffs_match_the_svs() -> None:
    with (
        open_slide(SHARED_SLIDES / "CMU-1-Small-Region.svs") as svs,
        open_slide(SHARED_SLIDES / "CMU-1-Small-Region_generic_pyramid_jpeg.tif") as generic,
        open_slide(SHARED_SLIDES / "CMU-1-Small-Region_pyramid.ome.tif") as ome,
    ):
        for level, (w, h) in enumerate(CMU_LEVELS):
            np.testing.assert_array_equal(
                generic.read_region((0, 0), level, (w, h)), ome.read_region((0, 0), level, (w, h))
            )
        ref = svs.read_region((0, 0), 0, CMU_LEVELS[0]).astype(np.float64)
        got = ome.read_region((0, 0), 0, CMU_LEVELS[0]).astype(np.float64)
    error = np.abs(got - ref)
    assert error.mean() < 4.0
    assert 10 * np.log10(255.0**2 / np.mean(error**2)) > 30.0


def test_outside_reads_on_real_slides_are_black() -> None:
    for name in ("CMU-1-Small-Region.svs", "CMU-1-Small-Region_pyramid.ome.tif"):
        with open_slide(SHARED_SLIDES / name) as slide:
            region = slide.read_region((-40, 2947), 0, (80, 40))
            assert not region[:, :40].any() and not region[20:].any()
            assert region[:20, 40:].any()


def test_bad_dicom_fails_cleanly() -> None:
    with pytest.raises(SlideError, match="Couldn't get image flavor"):
        open_slide(SHARED_SLIDES / "TCGA-XK-AAJU-01A-01-TS1_small_nonstandard.dcm")
