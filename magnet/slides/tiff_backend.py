"""tiffslide backend: TIFF and OME-TIFF, including pyramids stored as SubIFDs.

OpenSlide reads only the base level of an OME-TIFF whose pyramid lives in SubIFDs (QuPath, bfconvert and
tifffile write them so); tiffslide (tifffile + zarr) sees every level, so ``open_slide`` prefers it there
(it keeps the backend that sees the most levels).

Facts used (tiffslide and tifffile sources, https://github.com/Bayer-Group/tiffslide,
https://github.com/cgohlke/tifffile):
    - ``TiffSlide.read_region(..., as_array=True)`` returns the file's own dtype and channels (grey, RGB,
      RGBA, 16-bit...); ``pixels.to_rgb_uint8`` converts them. Out-of-bounds parts are zero-padded.
    - tiffslide maps the level-0 location to a level by ``int(location / downsample)`` (truncation toward
      zero). Its documented hook ``_read_region_loc_transform`` lets a subclass choose; ours takes the
      location in level pixels, which we compute with ``floor`` as ``MemorySlide`` does.
    - Thread safety: tiffslide keeps one zarr group per thread and tifffile's zarr store locks the file
      handle around each read (decoding runs outside the lock), so concurrent ``read_region`` calls are safe.
      The tests check that concurrent reads equal serial ones.
    - tiffslide fills ``tiffslide.mpp-x/y`` from vendor metadata or the TIFF resolution tags, but not from
      OME-XML ``PhysicalSizeX/Y``; we read those ourselves (OME data model: the unit defaults to µm).
    - tifffile opens a truncated file when its first IFD survives: it logs "invalid page offset" and
      reports fewer pages, and reading a tile past the end fails later. We turn both into errors at open.
"""

from __future__ import annotations

import logging
import math
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from magnet.errors import SlideError
from magnet.slides.base import NotThisFormat, Slide
from magnet.slides.checks import check_read_args
from magnet.slides.openslide_backend import AssociatedImages
from magnet.slides.pixels import to_rgb_uint8

#: File name extensions tiffslide reads: TIFF and OME-TIFF (``.ome.tif`` ends in ``.tif``), and the TIFF-based
#: Aperio and Hamamatsu NDPI files.
TIFF_EXTENSIONS = (".ndpi", ".svs", ".tif", ".tiff")

# OME length units -> micrometres (OME data model, UnitsLength).
_OME_UNIT_TO_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "μm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


class _LogCapture(logging.Filter):
    """Collects tifffile's error records emitted by the current thread, and keeps them off stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        if record.levelno >= logging.ERROR:
            message = record.getMessage()
            # tifffile prefixes the object's repr ("<tifffile.TiffPages @8> invalid page offset ...").
            self.messages.append(message.split("> ", 1)[-1] if message.startswith("<") else message)
        return False


@contextmanager
def _tifffile_errors() -> Iterator[_LogCapture]:
    capture = _LogCapture()
    logger = logging.getLogger("tifffile")
    logger.addFilter(capture)
    try:
        yield capture
    finally:
        logger.removeFilter(capture)


def _ome_mpp(ome_xml: str | None, series_index: int) -> tuple[float, float] | None:
    """``PhysicalSizeX/Y`` of the OME ``Image`` number ``series_index``, in µm, or ``None``."""
    if not ome_xml:
        return None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    images = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Image"]
    if not 0 <= series_index < len(images):
        return None
    pixels = next((el for el in images[series_index] if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in ("X", "Y"):
        try:
            value = float(pixels.get(f"PhysicalSize{axis}", "nan"))
        except ValueError:
            return None
        factor = _OME_UNIT_TO_UM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if factor is None or not math.isfinite(value) or value <= 0:
            return None
        sizes.append(value * factor)
    return sizes[0], sizes[1]


def _tiffslide_class() -> type[Any]:
    import tiffslide

    class LevelPixelTiffSlide(tiffslide.TiffSlide):  # type: ignore[misc]
        """tiffslide taking ``read_region`` locations in pixels of the level read (see module docstring)."""

        def _read_region_loc_transform(self, location: tuple[int, int], level: int) -> tuple[int, int]:
            return int(location[0]), int(location[1])

    return LevelPixelTiffSlide


def _check_not_truncated(path: str, ts: Any) -> None:
    """Every tile or strip of every level must lie inside the file."""
    tf = ts.ts_tifffile
    file_size = int(tf.filehandle.size)
    series = tf.series[int(ts.properties.get("tiffslide.series-index") or 0)]
    for index, level in enumerate(series.levels):
        for page in level.pages:
            offsets = np.asarray(getattr(page, "dataoffsets", ()), dtype=np.int64)
            counts = np.asarray(getattr(page, "databytecounts", ()), dtype=np.int64)
            if offsets.size == 0 or offsets.shape != counts.shape:
                continue
            end = int((offsets + counts).max())
            if end > file_size:
                raise SlideError(
                    path,
                    f"truncated TIFF: level {index} needs {end} bytes but the file has {file_size}",
                )


class TiffSlide(Slide):
    """A TIFF / OME-TIFF read by tiffslide."""

    backend = "tiffslide"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from tifffile import TiffFileError

        # tifffile loads pages lazily, so its error log is watched during the whole set-up.
        with _tifffile_errors() as logged:
            try:
                self._ts = _tiffslide_class()(self.path)
            except TiffFileError as exc:
                if "not a TIFF file" in str(exc):
                    raise NotThisFormat(self.path, "not a TIFF file") from None
                raise SlideError(self.path, f"corrupt TIFF ({exc})") from None
            except Exception as exc:  # noqa: BLE001 - tifffile/zarr raise many types on a broken file
                raise SlideError(self.path, f"corrupt TIFF ({type(exc).__name__}: {exc})") from None
            try:
                self._set_up()
                if logged.messages:
                    raise SlideError(self.path, f"corrupt or truncated TIFF ({logged.messages[0]})")
            except BaseException:
                self._ts.close()
                raise

    def _set_up(self) -> None:
        _check_not_truncated(self.path, self._ts)
        props = self._ts.properties
        self._properties = dict(props)
        self._level_dimensions = tuple((int(w), int(h)) for w, h in self._ts.level_dimensions)
        if not self._level_dimensions or min(min(d) for d in self._level_dimensions) <= 0:
            raise SlideError(self.path, f"empty image (level sizes {self._level_dimensions})")
        self._mpp = self._read_mpp(props)
        self._vendor = self._read_vendor(props)
        # Decode one pixel of the smallest level now, so an unsupported codec or pixel layout (e.g.
        # 5-channel fluorescence) is reported when the slide is opened.
        self.read_region((0, 0), self.level_count - 1, (1, 1))

    def _read_mpp(self, props: Mapping[str, Any]) -> tuple[float, float] | None:
        import tiffslide

        mpp_x, mpp_y = props.get(tiffslide.PROPERTY_NAME_MPP_X), props.get(tiffslide.PROPERTY_NAME_MPP_Y)
        if mpp_x and mpp_y and float(mpp_x) > 0 and float(mpp_y) > 0:
            return float(mpp_x), float(mpp_y)
        tf = self._ts.ts_tifffile
        return _ome_mpp(tf.ome_metadata if tf.is_ome else None, int(props.get("tiffslide.series-index") or 0))

    def _read_vendor(self, props: Mapping[str, Any]) -> str:
        import tiffslide

        vendor = props.get(tiffslide.PROPERTY_NAME_VENDOR)
        if vendor:
            return str(vendor)
        return "ome-tiff" if self._ts.ts_tifffile.is_ome else "generic-tiff"

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._level_dimensions

    @property
    def properties(self) -> Mapping[str, Any]:
        """All tiffslide properties (``tiffslide.*``, ``tiff.*``)."""
        return self._properties

    @property
    def associated_images(self) -> Mapping[str, np.ndarray]:
        return AssociatedImages(self.path, self._ts.associated_images)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        x, y, level, w, h = check_read_args(self.path, location, level, size, self.level_count)
        down = self.level_downsamples[level]
        lx, ly = math.floor(x / down), math.floor(y / down)
        level_w, level_h = self._level_dimensions[level]
        out = np.zeros((h, w, 3), dtype=np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, level_w), min(ly + h, level_h)
        if x1 <= x0 or y1 <= y0:  # wholly outside the slide: black, no read
            return out
        try:
            arr = self._ts.read_region((x0, y0), level, (x1 - x0, y1 - y0), as_array=True, padding=False)
            rgb = to_rgb_uint8(np.asarray(arr))
        except Exception as exc:  # noqa: BLE001 - decoder errors (truncated tiles...) become SlideErrors
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SlideError(
                self.path, f"cannot read level {level} at ({x}, {y}) size {w}x{h}: {reason}"
            ) from None
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = rgb
        return out

    def close(self) -> None:
        self._ts.close()


def open_tiffslide(path: str) -> TiffSlide:
    """File-backend opener for the registry."""
    return TiffSlide(path)


def tiffslide_level_bound(path: str) -> int:
    """At most how many levels ``TiffSlide(path)`` would see: the longest pyramid of any series tifffile
    finds in the file's directory, without tiffslide's set-up (a tenth of its cost: no zarr store, no
    truncation check, no decode). A file tifffile cannot parse gets a bound no backend reaches, so that it
    is opened and its reason reported."""
    import sys

    import tifffile

    with _tifffile_errors():
        try:
            with tifffile.TiffFile(path) as tf:
                return max((len(series.levels) for series in tf.series), default=0)
        except Exception:  # noqa: BLE001 - not a TIFF, or a broken one: let the opener say which
            return sys.maxsize
