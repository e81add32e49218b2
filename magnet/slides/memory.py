"""In-memory slides: a numpy array, a list of pyramid levels, or a plain image file (PNG, JPEG, ...).

Used by the tests (a slide the model can read without any file) and for plain images of any size: a single
array gets a pyramid built by repeated 4x area averaging until the level fits in ``min_level_size``, so
the reader can pick a coarse level as it does for real slides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from magnet.errors import SlideError
from magnet.slides.base import NotThisFormat, Slide
from magnet.slides.checks import check_read_args
from magnet.slides.pixels import to_rgb_uint8


def _area_downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    if h == 0 or w == 0:
        return rgb[:1, :1].copy()
    blocks = rgb[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def build_pyramid(rgb: np.ndarray, factor: int = 4, min_level_size: int = 512) -> list[np.ndarray]:
    """Levels of ``rgb``, each ``factor`` times smaller, until the longer side is ``<= min_level_size``."""
    levels = [rgb]
    while max(levels[-1].shape[:2]) > min_level_size and min(levels[-1].shape[:2]) >= factor:
        levels.append(_area_downsample(levels[-1], factor))
    return levels


class MemorySlide(Slide):
    """A slide held in memory as one or more RGB levels (level 0 first, each smaller)."""

    backend = "memory"

    def __init__(
        self,
        levels: np.ndarray | Sequence[np.ndarray],
        *,
        mpp: tuple[float, float] | None = None,
        path: str = "<memory>",
        vendor: str = "memory",
        pyramid: bool = True,
    ) -> None:
        super().__init__(path)
        arrays = [levels] if isinstance(levels, np.ndarray) else list(levels)
        if not arrays:
            raise SlideError(path, "no image levels given")
        converted = []
        for arr in arrays:
            try:
                rgb = to_rgb_uint8(np.asarray(arr))
            except ValueError as exc:
                raise SlideError(path, str(exc)) from None
            if rgb.shape[0] == 0 or rgb.shape[1] == 0:
                raise SlideError(path, f"empty image of shape {rgb.shape}")
            converted.append(rgb)
        if len(converted) == 1 and pyramid:
            converted = build_pyramid(converted[0])
        self._levels = converted
        self._mpp = mpp
        self._vendor = vendor

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((a.shape[1], a.shape[0]) for a in self._levels)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        x0_level0, y0_level0, level, w, h = check_read_args(
            self.path, location, level, size, self.level_count
        )
        arr = self._levels[level]
        down = self.level_downsamples[level]
        x = int(np.floor(x0_level0 / down))
        y = int(np.floor(y0_level0 / down))
        out = np.zeros((h, w, 3), dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, arr.shape[1]), min(y + h, arr.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = arr[y0:y1, x0:x1]
        return out


#: File name extensions of the plain images read as slides (TIFFs go to the slide backends).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


def open_image_file(path: str) -> MemorySlide:
    """A plain image file (PNG, JPEG, BMP, ...) of any size as an in-memory slide."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # plain images of any size are allowed; the user chose the file
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise NotThisFormat(path, "not an image Pillow reads") from None
    except OSError as exc:
        raise SlideError(path, f"cannot open image ({exc.strerror or exc})") from None
    with img:
        if img.format == "TIFF":  # TIFFs belong to the slide backends
            raise NotThisFormat(path, "TIFF files are read by the slide backends")
        try:
            img.load()
            arr = np.asarray(img.convert("RGBA") if img.mode in ("P", "LA", "PA") else img)
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise all three
            raise SlideError(path, f"corrupt {img.format} image ({exc})") from None
    return MemorySlide(arr, path=path, vendor="image")
