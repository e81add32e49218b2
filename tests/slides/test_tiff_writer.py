"""write_pyramidal_tiff: OpenSlide reads back the sizes, pixels (up to JPEG error) and mpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from magnet.errors import MagnetError
from magnet.slides.base import Slide
from magnet.slides.memory import MemorySlide
from magnet.slides.tiff_writer import write_pyramidal_tiff


def _textured_levels(width: int = 2048, height: int = 1536) -> list[np.ndarray]:
    """Smooth colour texture at downsamples 1, 4 and 16 (periods long enough to survive JPEG at level 2)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 90 * np.sin(xx / 137.0) * np.cos(yy / 153.0),
            128 + 90 * np.cos(xx / 171.0 + yy / 129.0),
            128 + 60 * np.sin((xx + yy) / 197.0),
        ],
        -1,
    )
    level0 = np.clip(base, 0, 255).astype(np.uint8)
    levels = [level0]
    for factor in (4, 16):
        h, w = height // factor, width // factor
        blocks = level0[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).astype(np.float32)
        levels.append(np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8))
    return levels


def _read_level(osr: openslide.OpenSlide, level: int) -> np.ndarray:
    w, h = osr.level_dimensions[level]
    return np.asarray(osr.read_region((0, 0), level, (w, h)).convert("RGB"))


def test_round_trip_through_openslide(tmp_path: Path) -> None:
    levels = _textured_levels()
    slide = MemorySlide(levels, mpp=(0.25, 0.5))
    out = tmp_path / "slide.tiff"
    write_pyramidal_tiff(slide, out, tile_size=256, quality=90)
    osr = openslide.OpenSlide(str(out))
    try:
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert osr.level_dimensions == slide.level_dimensions
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-4)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.5, rel=1e-4)
        for level, expected in enumerate(levels):
            got = _read_level(osr, level).astype(np.int16)
            assert np.abs(got - expected).mean() < 2.0  # JPEG error only
    finally:
        osr.close()
    assert [p.name for p in tmp_path.iterdir()] == ["slide.tiff"]  # no temp file left behind


def test_tiffslide_reads_it_too(tmp_path: Path) -> None:
    import tiffslide

    levels = _textured_levels(512, 384)
    slide = MemorySlide(levels, mpp=(0.5, 0.5))
    write_pyramidal_tiff(slide, tmp_path / "t.tif", tile_size=128)
    with tiffslide.TiffSlide(tmp_path / "t.tif") as ts:
        assert ts.level_dimensions == slide.level_dimensions
        assert ts.properties["tiffslide.mpp-x"] == pytest.approx(0.5, rel=1e-4)
        got = np.asarray(ts.read_region((0, 0), 1, ts.level_dimensions[1]).convert("RGB")).astype(np.int16)
        assert np.abs(got - levels[1]).mean() < 2.0


def test_subset_of_levels_and_no_mpp(tmp_path: Path) -> None:
    slide = MemorySlide(_textured_levels(512, 384))
    out = tmp_path / "subset.tif"
    write_pyramidal_tiff(slide, out, tile_size=128, levels=[0, 2])
    osr = openslide.OpenSlide(str(out))
    try:
        assert osr.level_dimensions == (slide.level_dimensions[0], slide.level_dimensions[2])
        assert "openslide.mpp-x" not in osr.properties
    finally:
        osr.close()


class _FailingSlide(MemorySlide):
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if level == 1:
            raise RuntimeError("disk on fire")
        return super().read_region(location, level, size)


def test_failure_leaves_no_file_and_keeps_old_one(tmp_path: Path) -> None:
    out = tmp_path / "x.tif"
    out.write_bytes(b"old")
    slide: Slide = _FailingSlide(_textured_levels(512, 384))
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_pyramidal_tiff(slide, out, tile_size=128)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 100}, "multiple of 16"),
        ({"quality": 0}, "quality"),
        ({"levels": [1, 0]}, "strictly increasing"),
        ({"levels": [0, 7]}, "out of range"),
        ({"levels": []}, "no levels"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"workers": 2}, "need a slide that opens again from its path"),  # an in-memory slide has none
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    slide = MemorySlide(_textured_levels(512, 384))
    with pytest.raises(MagnetError, match=message):
        write_pyramidal_tiff(slide, tmp_path / "bad.tif", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_tiles_rendered_in_worker_processes_write_the_same_file(tmp_path: Path) -> None:
    from magnet.synth.slide import VirtualSlide

    slide = VirtualSlide("synth:seed=5,size=2048x1536,lesion=negative,version=2")
    one, two = tmp_path / "one.tif", tmp_path / "two.tif"
    write_pyramidal_tiff(slide, one, tile_size=256)
    write_pyramidal_tiff(slide, two, tile_size=256, workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tif", "two.tif"]  # no temporary file left


def test_a_slide_error_crosses_a_process_boundary_whole() -> None:
    import pickle

    from magnet.errors import SlideError

    again = pickle.loads(pickle.dumps(SlideError("a.tif", "tile 3 is truncated")))
    assert isinstance(again, SlideError) and (again.path, again.reason) == ("a.tif", "tile 3 is truncated")
    assert str(again) == "a.tif: tile 3 is truncated"
