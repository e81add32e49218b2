"""``RegionReader``: the model's view of a slide: canvas ROIs in, antialiased float images out.

Implements the ``RegionSource`` protocol of ``magnet.slides.canvas`` for any ``Slide`` (METHOD.md §1, §2.6,
§2.8, §6; paper §3.1 and §4.2). For each ROI ``A`` (``3x3``, canvas coordinates, linear part ``h * D`` with
``D`` one of the 8 dihedral signed permutations):

1. **Box.** The axis-aligned canvas box ``c ± h`` becomes a level-0 box by ``X = W0/2 + u_x * L/2``,
   ``Y = H0/2 + u_y * L/2`` (``L = max(W0, H0)``; the slide is centred on a black square canvas).
2. **Level.** The coarsest level whose downsample is at most ``box_side_level0 / size`` (its pixels are no
   larger than the output's); level 0, upsampled, when the ROI is finer than level 0 (METHOD.md §6: pick the
   level near the needed size, never a whole level).
3. **Read.** The box in that level's pixels is fractional. We read the integer box that contains it plus a
   margin of ``ceil(filter support) + 1`` pixels, clipped to the level (only pixels inside the slide are
   decoded and counted); the rest of the array stays black (outside the slide is black, METHOD.md §1).
4. **Resize.** Pillow's convolution resampler with an explicit floating-point source box resamples exactly
   the fractional box to ``size x size``: every output pixel centre ``j + 0.5`` maps to the source position
   ``x0 + (j + 0.5) * (x1 - x0) / size`` (the ``align_corners=False`` convention), and the kernel widens with
   the downscale factor (antialias). The margin means the kernel never meets the array edge, so a read does
   not depend on where the integer box happens to start: nested ROIs equal direct reads, and the result is
   sub-pixel accurate (a linear ramp comes back exactly; see the tests). **[choice]** ``resample="bilinear"``
   (triangle filter, no ringing; equal to torch's ``interpolate(..., antialias=True)`` in the interior);
   ``"lanczos"`` is sharper.
5. **Grey filter** (paper §4.2, METHOD.md §2.8): pixels with ``max(R,G,B) - min(R,G,B) < 15`` become black.
   **[choice] It is applied after resizing**, to the pixels the network sees: (a) the antialias filter
   averages out JPEG and sensor noise on glass, which at native resolution scatters pixels just above the
   threshold and would leave speckle; (b) a black output pixel then means exactly "this view's pixel is grey",
   whatever level was read; (c) it costs ``size²`` instead of the (up to 4x larger) region. Filtering before
   resizing would instead darken the tissue rim by averaging it with black glass.
6. **Dihedral map.** ``out[g] = box[D g]`` for the output's normalised pixel centres ``g`` (METHOD.md §1:
   augmentation is folded into the ROI), done as an exact pixel gather.

All reads of a batch run in a ``ThreadPoolExecutor`` (``threads=1``: serial). OpenSlide, Pillow's resampler
and numpy release the GIL, so two threads decode two regions at once. The reader counts ``regions_read`` and
``pixels_decoded`` (``w * h`` of every region requested from the slide) for the benchmarks.

Sources: OpenSlide's ``read_region`` convention (level-0 location, level size); Pillow's ``Image.resize``
documentation (``box`` argument, filter supports).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch
from PIL import Image

from magnet.errors import SlideError
from magnet.slides.base import Slide
from magnet.slides.canvas import NUM_DIHEDRAL, dihedral_matrix
from magnet.slides.pixels import GREY_THRESHOLD, grey_filter, to_rgb_uint8

__all__ = ["DIHEDRAL_FLAT", "ReadPlan", "RegionReader", "apply_dihedral"]

# Pillow filters and their kernel half-widths in source pixels at scale 1 (Pillow's resample.c).
_RESAMPLE = {
    "bilinear": (Image.Resampling.BILINEAR, 1.0),
    "lanczos": (Image.Resampling.LANCZOS, 3.0),
}
# Relative tolerance for "linear part = h * D": float32 ROIs composed over 4 layers stay far inside it.
_ROI_RTOL = 1e-4


@dataclass(frozen=True)
class ReadPlan:
    """How one ROI is read: the level, the integer region (level pixels) and the exact box inside it."""

    level: int
    #: Integer region ``(x, y, w, h)`` in level pixels, margin included, before clipping to the slide.
    region: tuple[int, int, int, int]
    #: The ROI's box ``(x0, y0, x1, y1)`` in level pixels (fractional).
    box: tuple[float, float, float, float]
    #: ``D`` as ``(d00, d01, d10, d11)``.
    dihedral: tuple[int, int, int, int]


def _flat(index: int) -> tuple[int, int, int, int]:
    (d00, d01), (d10, d11) = dihedral_matrix(index)[:2, :2].int().tolist()
    return d00, d01, d10, d11


#: The 8 dihedral maps of ``canvas.py`` as ``(d00, d01, d10, d11)``, in its order (0 = identity).
DIHEDRAL_FLAT: tuple[tuple[int, int, int, int], ...] = tuple(_flat(i) for i in range(NUM_DIHEDRAL))


def _dihedral_index_maps(d: tuple[int, int, int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source (row, col) of every output pixel for ``out[g] = box[D g]``.

    Pixel centres in normalised coordinates are ``g = (2 i + 1 - S) / S``; ``D`` maps centres to centres,
    so the map is computed exactly on the integers ``2 i + 1 - S``.
    """
    g = 2 * np.arange(size) + 1 - size
    gx, gy = np.meshgrid(g, g)  # gx varies along columns (x), gy along rows (y)
    sx = d[0] * gx + d[1] * gy
    sy = d[2] * gx + d[3] * gy
    return (sy + size - 1) // 2, (sx + size - 1) // 2


def apply_dihedral(image: np.ndarray, d: tuple[int, int, int, int]) -> np.ndarray:
    """``out[g] = image[D g]`` for a square image ``(S, S, ...)``; ``d = (d00, d01, d10, d11)``."""
    if d == (1, 0, 0, 1):
        return image
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"dihedral maps need a square image, got {image.shape[:2]}")
    rows, cols = _dihedral_index_maps(d, image.shape[0])
    return image[rows, cols]


class RegionReader:
    """Reads batches of canvas ROIs from a ``Slide`` (the ``RegionSource`` protocol).

    Args:
        slide: any backend. The reader does not close it.
        grey_filter: blacken grey pixels (paper §4.2); switchable because ablations and thumbnails want raw
            pixels.
        grey_threshold: the filter's ``max - min`` threshold on 0..255 (paper: 15).
        threads: worker threads for the reads of a batch; 1 reads serially. Two matches the 2-core machines
            this project targets; slide decoding releases the GIL.
        resample: ``"bilinear"`` (default, triangle antialias filter) or ``"lanczos"``.
        max_region_pixels: refuse a single read larger than this many pixels (a zoomed-out ROI on a slide
            without coarse levels would otherwise decode the whole level into memory).
    """

    def __init__(
        self,
        slide: Slide,
        *,
        grey_filter: bool = True,
        grey_threshold: int = GREY_THRESHOLD,
        threads: int = 2,
        resample: str = "bilinear",
        max_region_pixels: int = 2**27,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
        self.slide = slide
        self.grey_filter = grey_filter
        self.grey_threshold = int(grey_threshold)
        self.threads = threads
        self.resample = resample
        self.max_region_pixels = max_region_pixels
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.pixels_decoded = 0
        self.regions_read = 0

    # --- protocol -------------------------------------------------------------------------------
    @property
    def slide_size(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` of the slide."""
        return self.slide.dimensions

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        """ROIs ``(N, 3, 3)`` in canvas coordinates to images ``(N, 3, size, size)`` float32 in ``[0, 1]``."""
        plans = self.plan(rois, size)
        if self.threads == 1 or len(plans) <= 1:
            images = [self._read_one(p, size) for p in plans]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="region-reader")
            images = list(self._pool.map(lambda p: self._read_one(p, size), plans))
        if not images:
            return torch.zeros((0, 3, size, size), dtype=torch.float32)
        batch = torch.from_numpy(np.stack(images))  # (N, S, S, 3) uint8
        return batch.permute(0, 3, 1, 2).float().div_(255.0)

    # --- planning -------------------------------------------------------------------------------
    def plan(self, rois: torch.Tensor, size: int) -> list[ReadPlan]:
        """Validate every ROI and work out its read (level, region, exact box); no pixels are read."""
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise SlideError(self.slide.path, f"output size must be a positive integer, got {size!r}")
        if not isinstance(rois, torch.Tensor) or rois.dim() != 3 or tuple(rois.shape[1:]) != (3, 3):
            shape = tuple(rois.shape) if isinstance(rois, torch.Tensor) else type(rois).__name__
            raise SlideError(self.slide.path, f"ROIs must be a tensor of shape (N, 3, 3), got {shape}")
        matrices = rois.detach().to("cpu", torch.float64).numpy()
        return [self._plan_one(i, m, int(size)) for i, m in enumerate(matrices)]

    def _split(self, index: int, m: np.ndarray) -> tuple[float, tuple[int, int, int, int]]:
        """Half-size ``h > 0`` and ``D`` with ``m[:2, :2] = h * D``, or a one-line error."""
        where = f"ROI {index}"
        if not np.isfinite(m).all():
            raise SlideError(self.slide.path, f"{where} has non-finite values (NaN or inf)")
        if not np.allclose(m[2], (0.0, 0.0, 1.0), atol=1e-6):
            raise SlideError(self.slide.path, f"{where}: last row must be (0, 0, 1), got {m[2].tolist()}")
        lin = m[:2, :2]
        half = float(np.abs(lin).max())
        if half <= 0.0:
            raise SlideError(self.slide.path, f"{where} has non-positive size (half-size {half:g})")
        pattern = tuple(int(v) for v in np.rint(lin / half).ravel())
        if pattern not in DIHEDRAL_FLAT:
            raise SlideError(
                self.slide.path,
                f"{where}: linear part {lin.tolist()} is not a half-size times a flip/90-degree rotation",
            )
        d = np.array(pattern, dtype=np.float64).reshape(2, 2)
        if np.abs(lin - half * d).max() > _ROI_RTOL * half:
            raise SlideError(
                self.slide.path, f"{where}: linear part {lin.tolist()} is not a square axis-aligned ROI"
            )
        # h * D == (-h) * (-D): a negative "h" is read as a positive half-size and the 180-degree map.
        return half, pattern  # type: ignore[return-value]

    def _plan_one(self, index: int, m: np.ndarray, size: int) -> ReadPlan:
        half, d = self._split(index, m)
        w0, h0 = self.slide.dimensions
        side = float(max(w0, h0))
        cx, cy = float(m[0, 2]), float(m[1, 2])
        # Canvas -> level 0 (METHOD.md §1): X = W0/2 + u_x L/2.
        x0 = w0 / 2 + (cx - half) * side / 2
        y0 = h0 / 2 + (cy - half) * side / 2
        box_side0 = half * side  # 2h canvas units = h L level-0 pixels
        level = self.slide.get_best_level_for_downsample(box_side0 / size)
        down = self.slide.level_downsamples[level]
        bx0, by0 = x0 / down, y0 / down
        bx1, by1 = bx0 + box_side0 / down, by0 + box_side0 / down
        support = _RESAMPLE[self.resample][1] * max(box_side0 / down / size, 1.0)
        margin = math.ceil(support) + 1
        rx, ry = math.floor(bx0) - margin, math.floor(by0) - margin
        rw, rh = math.ceil(bx1) + margin - rx, math.ceil(by1) + margin - ry
        if rw * rh > self.max_region_pixels:
            raise SlideError(
                self.slide.path,
                f"ROI {index} needs a {rw}x{rh} read at level {level} (downsample {down:g}); "
                f"the slide has no coarser level (limit {self.max_region_pixels} pixels)",
            )
        return ReadPlan(level, (rx, ry, rw, rh), (bx0, by0, bx1, by1), d)

    # --- reading --------------------------------------------------------------------------------
    def _read_region(self, plan: ReadPlan) -> np.ndarray:
        """The plan's integer region, black outside the level; only the inside is read from the slide."""
        rx, ry, rw, rh = plan.region
        lw, lh = self.slide.level_dimensions[plan.level]
        ix0, iy0 = max(rx, 0), max(ry, 0)
        ix1, iy1 = min(rx + rw, lw), min(ry + rh, lh)
        inside = ix1 > ix0 and iy1 > iy0
        if inside and (ix0, iy0, ix1, iy1) == (rx, ry, rx + rw, ry + rh):
            return self._fetch(plan.level, ix0, iy0, rw, rh)
        out = np.zeros((rh, rw, 3), dtype=np.uint8)
        if inside:
            pixels = self._fetch(plan.level, ix0, iy0, ix1 - ix0, iy1 - iy0)
            out[iy0 - ry : iy1 - ry, ix0 - rx : ix1 - rx] = pixels
        return out

    def _fetch(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        down = self.slide.level_downsamples[level]
        # Level pixels -> level-0 location; ceil keeps floor(location / down) == x for flooring backends and
        # is exact for integer downsamples (the off-by-less-than-one-level-0-pixel case needs a
        # non-integer downsample).
        location = (math.ceil(x * down - 1e-9), math.ceil(y * down - 1e-9))
        pixels = self.slide.read_region(location, level, (w, h))
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            pixels = to_rgb_uint8(pixels)  # a backend that ignored the uint8 RGB contract
        if pixels.shape[:2] != (h, w):
            raise SlideError(self.slide.path, f"read_region returned {pixels.shape[:2]}, expected {(h, w)}")
        with self._lock:
            self.pixels_decoded += w * h
            self.regions_read += 1
        return pixels

    def _read_one(self, plan: ReadPlan, size: int) -> np.ndarray:
        region = self._read_region(plan)
        rx, ry = plan.region[:2]
        bx0, by0, bx1, by1 = plan.box
        if region.any():
            image = Image.fromarray(region)
            box = (bx0 - rx, by0 - ry, bx1 - rx, by1 - ry)
            out = np.asarray(image.resize((size, size), _RESAMPLE[self.resample][0], box=box))
        else:  # all black (outside the slide): skip the resize
            out = np.zeros((size, size, 3), dtype=np.uint8)
        if self.grey_filter:
            out = grey_filter(out, self.grey_threshold)
        return apply_dihedral(out, plan.dihedral)

    # --- bookkeeping ----------------------------------------------------------------------------
    def reset_counters(self) -> None:
        """Set ``pixels_decoded`` and ``regions_read`` back to zero."""
        with self._lock:
            self.pixels_decoded = 0
            self.regions_read = 0

    def close(self) -> None:
        """Stop the worker threads (the slide stays open: it belongs to the caller)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> RegionReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegionReader({self.slide!r}, threads={self.threads}, grey_filter={self.grey_filter})"
