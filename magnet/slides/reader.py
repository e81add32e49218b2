"""``RegionReader``: the model's view of a slide: canvas ROIs in, antialiased float images out.

Implements the ``RegionSource`` protocol of ``magnet.geometry`` for any ``Slide`` (docs/method.md §1, §2.6,
§2.8, §6; paper §3.1 and §4.2). For each ROI ``A`` (``3x3``, canvas coordinates, linear part ``h * D`` with
``D`` one of the 8 dihedral signed permutations):

1. **Box.** The axis-aligned canvas box ``c ± h`` becomes a level-0 box by ``X = W0/2 + u_x * L/2``,
   ``Y = H0/2 + u_y * L/2`` (``L = max(W0, H0)``; the slide is centred on a black square canvas).
2. **Level.** The coarsest level whose downsample is at most ``box_side_level0 / size`` (its pixels are no
   larger than the output's); level 0, upsampled, when the ROI is finer than level 0 (docs/method.md §6:
   pick the level near the needed size, never a whole level).
3. **Read.** The box in that level's pixels is fractional. We read the integer box that contains it plus a
   margin as wide as the resize kernel reaches past the box (+1 pixel for rounding), clipped to the level
   (only pixels inside the slide are decoded and counted); the rest stays black (docs/method.md §1).
4. **Resize.** Pillow's convolution resampler with an explicit floating-point source box resamples exactly
   the fractional box to ``size x size``: every output pixel centre ``j + 0.5`` maps to the source position
   ``x0 + (j + 0.5) * (x1 - x0) / size`` (the ``align_corners=False`` convention), and the kernel widens with
   the downscale factor (antialias). The margin means the kernel never meets the array edge, so a read does
   not depend on where the integer box happens to start: nested ROIs equal direct reads, and the result is
   sub-pixel accurate (a linear ramp comes back to within uint8 rounding; see the tests).
   **[choice]** ``resample="bilinear"`` (triangle filter, no ringing; equal to torch's
   ``interpolate(..., antialias=True)`` in the interior); ``"lanczos"`` is sharper. **[choice]** Resampling
   runs on uint8 in Pillow (fast, releases the GIL), so outputs are multiples of 1/255.
5. **Grey filter** (paper §4.2, docs/method.md §2.8): pixels with ``max(R,G,B) - min(R,G,B) < 15`` turn black.
   **[choice] It is applied after resizing**, to the pixels the network sees: (a) the antialias filter
   averages out JPEG and sensor noise on glass, which at native resolution scatters pixels just above the
   threshold and would leave speckle; (b) a black output pixel then means exactly "this view's pixel is grey",
   whatever level was read; (c) it costs ``size²`` instead of the (up to 4x larger) region. Filtering before
   resizing would instead darken the tissue rim by averaging it with black glass.
6. **Dihedral map.** ``out[g] = box[D g]`` for the output's normalised pixel centres ``g`` (docs/method.md §1:
   augmentation is folded into the ROI). ``D`` maps pixel centres to pixel centres, so this is an exact
   permutation: flips and a transpose, fused with the ``(H, W, 3) -> (3, H, W)`` copy.

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

from magnet.errors import NonFiniteError, SlideError
from magnet.geometry import NUM_DIHEDRAL, canvas_side, canvas_to_level0, dihedral_matrix
from magnet.slides.base import Slide
from magnet.slides.noise import native_stderr_captured
from magnet.slides.pixels import GREY_THRESHOLD, blacken_grey, to_rgb_uint8

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


#: The 8 dihedral maps of ``magnet.geometry`` as ``(d00, d01, d10, d11)``, in its order (0 = identity).
DIHEDRAL_FLAT: tuple[tuple[int, int, int, int], ...] = tuple(_flat(i) for i in range(NUM_DIHEDRAL))


def apply_dihedral(image: np.ndarray, d: tuple[int, int, int, int]) -> np.ndarray:
    """``out[g] = image[D g]`` for a square image ``(S, S, ...)``; ``d = (d00, d01, d10, d11)``.

    Pixel centres ``g = (2 i + 1 - S) / S`` map to pixel centres, and ``g -> -g`` is the index flip
    ``i -> S - 1 - i``. Diagonal ``D``: ``out[y, x] = image[±y, ±x]``, i.e. flips by the signs of ``d11``
    and ``d00``. Anti-diagonal ``D``: ``out[y, x] = image[d10 x, d01 y]``, i.e. the transpose, flipped by
    the signs of ``d01`` (rows) and ``d10`` (columns). Returns a view (negative strides possible).
    """
    if d not in DIHEDRAL_FLAT:
        raise ValueError(f"{d} is not one of the 8 dihedral maps")
    if d[1] == 0:
        return image[:: d[3], :: d[0]]
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"a transposing dihedral map needs a square image, got {image.shape[:2]}")
    return image.swapaxes(0, 1)[:: d[1], :: d[2]]


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
        with native_stderr_captured():  # what the slide's libraries print (magnet.slides.noise)
            return self._read(rois, size)

    def _read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        plans = self.plan(rois, size)
        out = torch.empty((len(plans), 3, size, size), dtype=torch.float32)

        def work(index: int) -> None:
            # Each worker converts its own image into its slot: the uint8 -> float copy is parallel too.
            out[index].copy_(torch.from_numpy(self._read_one(plans[index], size))).div_(255.0)

        if self.threads == 1 or len(plans) <= 1:
            for i in range(len(plans)):
                work(i)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="region-reader")
            list(self._pool.map(work, range(len(plans))))  # list(): wait, and re-raise any worker error
        return out

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
        if not np.isfinite(m).all():  # the model's fault, not the slide's: never skipped as a bad slide
            raise NonFiniteError(f"{self.slide.path}: {where} has non-finite values (NaN or inf)")
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
        slide_size = self.slide.dimensions
        cx, cy = float(m[0, 2]), float(m[1, 2])
        # The box's corner c - h on level 0 (docs/method.md §1, magnet.geometry): X = W0/2 + u_x L/2.
        x0, y0 = canvas_to_level0(np.array([cx - half, cy - half]), slide_size).tolist()
        box_side0 = half * canvas_side(slide_size)  # 2h canvas units = h L level-0 pixels
        level = self.slide.get_best_level_for_downsample(box_side0 / size)
        down = self.slide.level_downsamples[level]
        bx0, by0 = x0 / down, y0 / down
        bx1, by1 = bx0 + box_side0 / down, by0 + box_side0 / down
        # Margin: how far past the box edge the filter reaches. Pillow's kernel for the edge output pixel
        # (centre f/2 inside the box, f = source pixels per output pixel) spans support * max(f, 1) source
        # pixels each side; +1 covers Pillow's rounding of the window to whole pixels.
        scale = box_side0 / down / size
        reach = _RESAMPLE[self.resample][1] * max(scale, 1.0) - scale / 2
        margin = max(math.ceil(reach), 0) + 1
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
    def _read_region(self, plan: ReadPlan) -> np.ndarray | None:
        """The plan's integer region, black outside the level; only the inside is read from the slide.

        ``None`` when the region lies wholly outside the slide (nothing to read, the output is black).
        """
        rx, ry, rw, rh = plan.region
        lw, lh = self.slide.level_dimensions[plan.level]
        ix0, iy0 = max(rx, 0), max(ry, 0)
        ix1, iy1 = min(rx + rw, lw), min(ry + rh, lh)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        if (ix0, iy0, ix1, iy1) == (rx, ry, rx + rw, ry + rh):
            return self._fetch(plan.level, ix0, iy0, rw, rh)
        out = np.zeros((rh, rw, 3), dtype=np.uint8)
        out[iy0 - ry : iy1 - ry, ix0 - rx : ix1 - rx] = self._fetch(
            plan.level, ix0, iy0, ix1 - ix0, iy1 - iy0
        )
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
        """One ROI as a C-contiguous ``(3, size, size)`` uint8 image."""
        region = self._read_region(plan)
        if region is None:  # wholly outside the slide
            return np.zeros((3, size, size), dtype=np.uint8)
        rx, ry = plan.region[:2]
        bx0, by0, bx1, by1 = plan.box
        box = (bx0 - rx, by0 - ry, bx1 - rx, by1 - ry)
        resized = np.asarray(
            Image.fromarray(region).resize((size, size), _RESAMPLE[self.resample][0], box=box)
        )
        # One copy does both the dihedral permutation and the (H, W, 3) -> (3, H, W) layout change.
        chw = np.ascontiguousarray(apply_dihedral(resized, plan.dihedral).transpose(2, 0, 1))
        if self.grey_filter:  # pixel-wise, so it commutes with the permutation
            blacken_grey(chw, self.grey_threshold, channel_axis=0)  # contiguous channel planes: fast
        return chw

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
