"""Shared test fixtures: where the real data lives, and tiny pyramidal TIFFs written on the fly.

- ``SHARED_DATA`` / ``SHARED_SLIDES``: the real files of ``../shared/data`` (relative to the repository
  root). A user's fresh clone has no ``../shared``; tests that need it use the ``shared_slides`` fixture,
  which skips with a reason, or ``pytest.mark.skipif(not SHARED_SLIDES.exists(), ...)`` written in the test
  file itself (tests cannot import this module portably).
- ``make_image`` (fixture returning ``make_test_image(width, height, channels=3, dtype=np.uint8, seed=0)``):
  a deterministic smooth colour texture (smooth, so JPEG keeps it within a few grey levels), a little noise;
  4 channels add an alpha ramp (opaque left, transparent right quarter).
- ``tiny_tiff(name, image=None, ...)`` (fixture over ``write_tiny_tiff``): writes a tiled pyramidal TIFF
  with tifffile into the test's ``tmp_path`` and returns ``(path, levels)``. Levels are ``image`` halved
  ``levels - 1`` times (2x2 box averages).
  ``layout="pages"`` stores them as successive pages, the reduced ones with ``NewSubfileType = 1`` — the
  "generic tiled TIFF" that OpenSlide reads with all its levels; ``layout="subifds"`` stores them as SubIFDs
  of the first page, as OME-TIFF pyramids do (OpenSlide then sees level 0 only, tiffslide all).
  ``compression`` is ``None`` or ``"zlib"`` (lossless: pixels round-trip exactly) or ``"jpeg"`` (8-bit
  RGB/grey only);
  ``mpp`` writes the resolution tags in centimetres, the unit OpenSlide and tiffslide understand.
  Greyscale (2-D), RGBA (4 channels, unassociated alpha) and 16-bit images are written as given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
SHARED_SLIDES = SHARED_DATA / "slides"
SHARED_MISSING_REASON = f"real data folder {SHARED_SLIDES} is absent (it lives beside the project)"


def make_test_image(
    width: int, height: int, channels: int = 3, dtype: type = np.uint8, seed: int = 0
) -> np.ndarray:
    """Deterministic smooth texture ``(height, width[, channels])`` spanning most of ``dtype``'s range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for c in range(channels):
        phase = rng.uniform(0, 2 * np.pi, size=2)
        plane = 0.5 + 0.35 * np.sin(xx / (7.0 + 3 * c) + phase[0]) * np.cos(yy / (9.0 + 2 * c) + phase[1])
        planes.append(plane + rng.normal(0, 0.02, size=plane.shape))
    unit = np.clip(np.stack(planes, axis=-1), 0, 1)
    if channels == 4:  # alpha: opaque left half, transparent right quarter, a ramp between
        unit[..., 3] = np.clip((0.75 - xx / width) * 4, 0, 1)
    top = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    out = np.rint(unit * top).astype(dtype) if top > 1 else unit.astype(dtype)
    return out[..., 0] if channels == 1 else out


def halve(image: np.ndarray) -> np.ndarray:
    """2x2 box average (odd last row/column dropped), same dtype."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    blocks = image[: 2 * h, : 2 * w].reshape(h, 2, w, 2, *image.shape[2:]).astype(np.float64)
    mean = blocks.mean(axis=(1, 3))
    return (np.rint(mean) if np.issubdtype(image.dtype, np.integer) else mean).astype(image.dtype)


def write_tiny_tiff(
    path: Path,
    image: np.ndarray,
    *,
    levels: int = 3,
    tile: int = 32,
    compression: str | None = None,
    layout: str = "pages",
    mpp: float | None = None,
) -> list[np.ndarray]:
    """Write ``image`` and its halvings as a tiled pyramidal TIFF at ``path``; return the levels written."""
    import tifffile

    if layout not in ("pages", "subifds"):
        raise ValueError(f"layout must be 'pages' or 'subifds', got {layout!r}")
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(halve(pyramid[-1]))
    grey = image.ndim == 2
    options: dict[str, object] = {
        "tile": (tile, tile),
        "compression": compression,
        "photometric": "minisblack" if grey else "rgb",
        "metadata": None,  # no tifffile JSON description: a plain TIFF as scanners write it
    }
    if not grey and image.shape[2] == 4:
        options["extrasamples"] = ("unassalpha",)
    if mpp is not None:
        options["resolution"] = (1e4 / mpp, 1e4 / mpp)
        options["resolutionunit"] = "CENTIMETER"
    with tifffile.TiffWriter(path) as tw:
        if layout == "pages":
            tw.write(pyramid[0], subfiletype=0, **options)  # type: ignore[arg-type]
        else:
            tw.write(pyramid[0], subifds=levels - 1, **options)  # type: ignore[arg-type]
        for level in pyramid[1:]:
            tw.write(level, subfiletype=1, **options)  # type: ignore[arg-type]
    return pyramid


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """``../shared/data/slides``, or skip the test when it is absent."""
    if not SHARED_SLIDES.exists():
        pytest.skip(SHARED_MISSING_REASON)
    return SHARED_SLIDES


@pytest.fixture
def make_image() -> Callable[..., np.ndarray]:
    """``make_test_image`` as a fixture, for test files (which cannot import conftest)."""
    return make_test_image


@pytest.fixture
def tiny_tiff(tmp_path: Path) -> Callable[..., tuple[Path, list[np.ndarray]]]:
    """Factory ``tiny_tiff(name, image=None, **write_tiny_tiff options) -> (path, levels)`` in ``tmp_path``.

    ``image`` defaults to a 128x96 RGB ``make_test_image``; with ``levels=3`` and ``tile=32`` the file holds
    128x96, 64x48 and 32x24 levels (4x3, 2x2 and 1x1 tiles) in a few tens of kilobytes. Tiles smaller than
    32 trip OpenSlide on uncompressed files ("Invalid tile byte count"), hence the default.
    """

    def make(name: str = "tiny.tif", image: np.ndarray | None = None, **options: object):  # type: ignore[no-untyped-def]
        pixels = make_test_image(128, 96) if image is None else image
        path = tmp_path / name
        return path, write_tiny_tiff(path, pixels, **options)  # type: ignore[arg-type]

    return make
