"""The ``Slide`` interface every backend implements.

Convention:
    - Pixel coordinates are ``(x, y)``: x is the column (width), y the row (height), y points down.
    - ``location`` is always in level-0 pixels; ``size`` is ``(width, height)`` in pixels *of the level read*
      (OpenSlide's convention, kept so that users of OpenSlide meet no surprise).
    - ``read_region`` returns a ``uint8`` array of shape ``(height, width, 3)``, RGB. Areas outside the slide,
      and transparent areas of the file, are black (0, 0, 0).
    - ``level_downsamples`` are computed from the level sizes (level-0 width / level width, averaged with the
      height ratio), never assumed to be powers of two.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType

import numpy as np

from magnet.errors import SlideError


class NotThisFormat(SlideError):
    """Raised by a file backend for a file that is not in its format at all (not merely broken).

    ``open_slide`` reports these refusals only when no backend recognised the file, so the message for a
    recognised-but-broken file (a DICOM OpenSlide refuses, a truncated TIFF) names the real problem.
    """


class Slide(ABC):
    """A pyramidal image: level sizes, physical resolution and region reads."""

    #: Name of the backend (``"openslide"``, ``"tiffslide"``, ``"memory"``, ``"synth"``...).
    backend: str = "?"

    def __init__(self, path: str) -> None:
        self.path = str(path)
        # Backends that know these set them after calling this constructor.
        self._mpp: tuple[float, float] | None = None
        self._vendor = "unknown"

    # --- geometry -------------------------------------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level, level 0 first."""

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        w0, h0 = self.dimensions
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions)

    # --- metadata -------------------------------------------------------------------------------
    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per level-0 pixel ``(x, y)``, or ``None`` when the file does not say."""
        return self._mpp

    @property
    def vendor(self) -> str:
        """Format or scanner vendor, as the backend reports it."""
        return self._vendor

    @property
    def associated_images(self) -> Mapping[str, np.ndarray]:
        """Label, macro, thumbnail... images stored in the file (RGB ``uint8``), by name."""
        return {}

    # --- pixels ---------------------------------------------------------------------------------
    @abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` pixels of ``level`` whose top-left corner is ``location`` (level-0 pixels).

        Returns ``uint8`` RGB of shape ``(size[1], size[0], 3)``; outside the slide is black.
        """

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (level 0 if none)."""
        best = 0
        for level, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + 1e-6):
                best = level
        return best

    def thumbnail(self, max_size: int = 512) -> np.ndarray:
        """The whole slide, fitted into ``max_size`` pixels on its longer side (RGB ``uint8``)."""
        from PIL import Image

        w0, h0 = self.dimensions
        scale = max(w0, h0) / max_size
        level = self.get_best_level_for_downsample(max(scale, 1.0))
        lw, lh = self.level_dimensions[level]
        region = self.read_region((0, 0), level, (lw, lh))
        tw, th = max(1, round(w0 / scale)), max(1, round(h0 / scale))
        return np.asarray(Image.fromarray(region).resize((tw, th), Image.Resampling.BOX))

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - backends without resources need nothing here
        """Release file handles."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"{type(self).__name__}({self.path!r}, {w}x{h}, levels={self.level_count})"
