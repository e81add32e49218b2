"""Bad input gives a one-line ``SlideError`` naming the file and the reason, from every backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from magnet.errors import SlideError
from magnet.slides import MemorySlide, OpenSlideSlide, Slide, TiffSlide, open_slide

SHARED_SLIDES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "slides").resolve()
BAD_DICOM = SHARED_SLIDES / "TCGA-XK-AAJU-01A-01-TS1_small_nonstandard.dcm"


def _open_error(path: Path | str) -> str:
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_missing_directory_and_empty(tmp_path: Path) -> None:
    assert "no such file" in _open_error(tmp_path / "nope.svs")
    assert "directory" in _open_error(tmp_path)
    (tmp_path / "empty.svs").write_bytes(b"")
    assert "empty" in _open_error(tmp_path / "empty.svs")
    with pytest.raises(SlideError, match="empty slide path"):
        open_slide("  ")


def test_random_bytes_and_text_are_unsupported(tmp_path: Path) -> None:
    (tmp_path / "random.svs").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "notes.txt").write_text("not a slide\n")
    for name in ("random.svs", "notes.txt"):
        message = _open_error(tmp_path / name)
        assert "unsupported file format" in message
        assert "openslide" in message and "tiffslide" in message


def test_truncated_tiff_is_reported_as_truncated(tiny_tiff) -> None:
    path, _ = tiny_tiff(compression="jpeg")
    data = path.read_bytes()
    cut = path.with_name("cut.tif")
    cut.write_bytes(data[: len(data) // 3])
    message = _open_error(cut)
    assert "truncated" in message and "tiffslide" in message


def test_tiff_with_lost_pages_is_corrupt(tiny_tiff) -> None:
    """Cut right after level 0: the first page is whole, the next IFD offset points past the end."""
    path, _ = tiny_tiff(compression="zlib")
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        end = max(o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True))
    cut = path.with_name("lost.tif")
    cut.write_bytes(path.read_bytes()[:end])
    message = _open_error(cut)
    assert "corrupt" in message or "truncated" in message


@pytest.mark.skipif(not BAD_DICOM.exists(), reason=f"real data {BAD_DICOM} is absent")
def test_nonstandard_dicom_fails_cleanly() -> None:
    message = _open_error(BAD_DICOM)
    assert "Couldn't get image flavor" in message
    assert "Reading" not in message  # OpenSlide's own path prefix is dropped: the path appears once
    assert message.count(BAD_DICOM.name) == 1


def _slides(tiny_tiff) -> list[Slide]:
    path, levels = tiny_tiff()
    return [MemorySlide(levels), OpenSlideSlide(str(path)), TiffSlide(str(path))]


BAD_READS = [
    ((0, 0), 0, (math.nan, 10), "finite"),
    ((0, 0), 0, (10, math.inf), "finite"),
    ((math.nan, 0), 0, (10, 10), "finite"),
    ((0, 0), 0, (0, 10), "positive"),
    ((0, 0), 0, (10, -3), "positive"),
    ((0, 0), 0, (10.5, 10), "whole pixels"),
    ((0, 0), 0, (10,), "pair"),
    ((0, 0), 0, ("a", 1), "numbers"),
    ((0, 0), -1, (10, 10), "out of range"),
    ((0, 0), 3, (10, 10), "out of range"),
    ((0, 0), 1.0, (10, 10), "integer"),
    ((0, 0), True, (10, 10), "integer"),
    ((0, 0), 0, (1 << 16, 1 << 16), "larger than"),
]


@pytest.mark.parametrize("location, level, size, reason", BAD_READS)
def test_bad_region_arguments(tiny_tiff, location, level, size, reason: str) -> None:
    for slide in _slides(tiny_tiff):
        with slide, pytest.raises(SlideError, match=reason) as info:
            slide.read_region(location, level, size)
        assert str(info.value).startswith(slide.path)


def test_numpy_arguments_are_accepted(tiny_tiff) -> None:
    for slide in _slides(tiny_tiff):
        with slide:
            region = slide.read_region(np.array([3, 4]), np.int64(1), (np.int64(5), np.float64(6.0)))  # type: ignore[arg-type]
            assert region.shape == (6, 5, 3)


def test_truncated_png_is_corrupt(tmp_path: Path, make_image) -> None:
    from PIL import Image

    full = tmp_path / "full.png"
    Image.fromarray(make_image(64, 48)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:300])
    assert "corrupt PNG image" in _open_error(cut)
