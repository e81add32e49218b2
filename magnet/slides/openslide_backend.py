"""OpenSlide backend: Aperio SVS, Hamamatsu, MIRAX, Leica, Ventana, DICOM, generic tiled TIFF, ...

Facts used (OpenSlide documentation, https://openslide.org/api/python/):
    - ``read_region`` returns RGBA with un-premultiplied colour; areas outside the slide and outside the
      scanned region are transparent. We composite onto black (``pixels.to_rgb_uint8``), so they are black.
    - At a level > 0, OpenSlide places the region at ``location / downsample`` with sub-pixel precision
      (it interpolates when that is not a whole pixel); the other backends floor to the level's pixel grid.
      The two agree within one level pixel.
    - The C library is thread-safe for reads on one handle and releases the GIL, so ``RegionReader`` can
      call ``read_region`` from a thread pool without a lock.
    - An error inside the library (e.g. a corrupt tile) leaves the handle in a permanent error state; every
      later call fails too. We report each as a ``SlideError``.
    - ``openslide.mpp-x/y`` and ``openslide.vendor`` are the standard properties.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from magnet.errors import SlideError
from magnet.slides.base import NotThisFormat, Slide
from magnet.slides.checks import check_read_args
from magnet.slides.noise import native_stderr_captured
from magnet.slides.pixels import to_rgb_uint8

#: File name extensions of the formats OpenSlide reads (https://openslide.org/formats/): Aperio, DICOM,
#: Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle, Ventana, Zeiss and generic tiled TIFF.
OPENSLIDE_EXTENSIONS = (".bif", ".czi", ".dcm", ".mrxs", ".ndpi", ".scn", ".svs", ".svslide", ".tif", ".tiff",
                        ".vms", ".vmu")


class AssociatedImages(Mapping[str, np.ndarray]):
    """A lazy ``name -> RGB uint8`` view of a library's associated images (label, macro, thumbnail...).

    Decoding happens on access only, so listing the names (``slide-info``) costs nothing.
    """

    def __init__(self, path: str, images: Mapping[str, Any]) -> None:
        self._path = path
        self._images = images

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            image = self._images[name]
        except KeyError:
            raise
        except Exception as exc:  # noqa: BLE001 - library errors become one-line SlideErrors
            raise SlideError(self._path, f"cannot read associated image {name!r} ({exc})") from None
        return to_rgb_uint8(np.asarray(image))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._images.keys()))

    def __len__(self) -> int:
        return len(self._images)


def _positive_float(value: object) -> float | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _library_reason(path: str, exc: BaseException) -> str:
    """OpenSlide's message without the ``Reading <path>:`` prefix (``SlideError`` names the path)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for prefix in (f"Reading {path}: ", f"{path}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


class OpenSlideSlide(Slide):
    """A slide file read by OpenSlide (openslide-python over the openslide-bin C library)."""

    backend = "openslide"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import openslide

        self._errors: tuple[type[BaseException], ...] = (openslide.OpenSlideError, OSError, ValueError)
        try:
            self._osr = openslide.OpenSlide(self.path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise NotThisFormat(self.path, "not a format OpenSlide reads") from None
        except self._errors as exc:
            raise SlideError(self.path, _library_reason(self.path, exc)) from None
        self._closed = False
        self._close_lock = threading.Lock()
        self._level_dimensions = tuple((int(w), int(h)) for w, h in self._osr.level_dimensions)
        props = self._osr.properties
        self._properties = dict(props)
        mpp_x = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_X))
        mpp_y = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_Y))
        self._mpp = (mpp_x, mpp_y) if mpp_x is not None and mpp_y is not None else None
        self._vendor = str(props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown")
        # Decode one pixel of the smallest level now: a codec the library lacks or a broken first tile is
        # then reported when the slide is opened, not in the middle of training.
        last = self.level_count - 1
        self.read_region((0, 0), last, (1, 1))

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._level_dimensions

    @property
    def properties(self) -> Mapping[str, str]:
        """All OpenSlide properties (``openslide.*``, ``aperio.*``, ``tiff.*``...)."""
        return self._properties

    @property
    def associated_images(self) -> Mapping[str, np.ndarray]:
        return AssociatedImages(self.path, self._osr.associated_images)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        x, y, level, w, h = check_read_args(self.path, location, level, size, self.level_count)
        if self._closed:
            raise SlideError(self.path, "slide is closed")
        try:
            rgba = self._osr.read_region((x, y), level, (w, h))
        except self._errors as exc:
            reason = _library_reason(self.path, exc)
            raise SlideError(
                self.path, f"cannot read level {level} at ({x}, {y}) size {w}x{h}: {reason}"
            ) from None
        return to_rgb_uint8(np.asarray(rgba))

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._osr.close()


def open_openslide(path: str) -> OpenSlideSlide:
    """File-backend opener for the registry."""
    return OpenSlideSlide(path)


def dicom_series_uid(path: str) -> str | None:
    """The DICOM SeriesInstanceUID of the whole-slide image ``path`` belongs to, or None when OpenSlide cannot
    open it as one (not DICOM, or a file it refuses; opening it later reports why)."""
    try:
        with native_stderr_captured():
            slide = OpenSlideSlide(path)
    except Exception:  # noqa: BLE001 - any failure means "no series known"
        return None
    try:
        return slide.properties.get("dicom.SeriesInstanceUID") or None
    finally:
        slide.close()
