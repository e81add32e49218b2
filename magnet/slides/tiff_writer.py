"""Write any ``Slide`` as a JPEG-tiled pyramidal TIFF that OpenSlide opens as a "generic tiled TIFF".

Layout (what OpenSlide's generic-tiff reader expects, https://openslide.org/formats/generic-tiff/):
    - page 0 is level 0, tiled; every further page is a reduced-resolution copy (``NewSubfileType = 1``),
      tiled, each smaller than the one before;
    - JPEG tiles; the data is given as RGB and tifffile stores it the usual way for JPEG in TIFF
      (``Photometric = YCbCr`` with 2x2 chroma subsampling), which OpenSlide and tiffslide decode back to
      RGB (checked by ``tests/slides/test_tiff_writer.py``; giving tifffile ``photometric="ycbcr"`` would
      instead declare RGB data to *be* YCbCr and the colours would come back wrong);
    - ``XResolution`` / ``YResolution`` in pixels per centimetre from ``slide.mpp``, which OpenSlide reports
      as ``openslide.mpp-x`` / ``openslide.mpp-y``.

The writer streams: each level is produced tile by tile with ``slide.read_region`` at that level and handed
to tifffile as an iterator, so no whole level is ever held in memory (the benchmark writes a
40,000 x 40,000 slide this way). With ``workers > 1`` the tiles are read in that many processes, each
opening the slide again from its path (``open_slide``), a row of tiles per job and at most two jobs per
process ahead of the writer, so the file is the same, sooner on large slides (each worker first pays a
start of seconds): rendering a virtual slide is nearly all of an export's time (a 100,000² slide is
minutes of one core), and it is pure CPU work that threads would serialise on the GIL. A tile a worker
cannot read fails the export with that worker's error. The file appears atomically: it is written to a
temporary file in the target folder and renamed over the target only when complete (``magnet.atomic``); on
any error, Ctrl-C included, the temporary file is removed (the command line turns a SIGTERM into the same
interruption).
"""

from __future__ import annotations

import math
import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from magnet.atomic import atomic_path
from magnet.errors import MagnetError
from magnet.outputs import output_file
from magnet.slides.base import Slide

# Classic TIFF offsets are 32-bit; above this much *uncompressed* data we switch to BigTIFF so that even a
# badly compressing slide cannot overflow. OpenSlide and tiffslide read both.
_BIGTIFF_ABOVE_BYTES = 2**31


def _tile_row(slide: Slide, level: int, tile_size: int, ty: int) -> list[np.ndarray]:
    """The tiles of one row of a level (top edge ``ty``), each ``(tile_size, tile_size, 3)``, edges black."""
    width = slide.level_dimensions[level][0]
    down = slide.level_downsamples[level]
    row = []
    for tx in range(0, width, tile_size):
        # ``location`` is in level-0 pixels. ceil keeps floor(location / down) == tx for backends that
        # floor (memory), and is exact when the downsample is an integer (the usual case).
        location = (math.ceil(tx * down - 1e-9), math.ceil(ty * down - 1e-9))
        tile = slide.read_region(location, level, (tile_size, tile_size))
        if tile.shape != (tile_size, tile_size, 3) or tile.dtype != np.uint8:
            raise MagnetError(
                f"{slide.path}: read_region returned {tile.shape} {tile.dtype}, "
                f"expected ({tile_size}, {tile_size}, 3) uint8"
            )
        row.append(tile)
    return row


def _tiles(slide: Slide, level: int, tile_size: int) -> Iterator[np.ndarray]:
    """Tiles of one level in row-major order."""
    for ty in range(0, slide.level_dimensions[level][1], tile_size):
        yield from _tile_row(slide, level, tile_size, ty)


_worker_slides: dict[str, Slide] = {}  # in a worker process: the slide it opened, by path


def _tile_row_in_worker(path: str, level: int, tile_size: int, ty: int) -> list[np.ndarray]:
    if path not in _worker_slides:
        from magnet.slides.registry import open_slide

        _worker_slides[path] = open_slide(path)
    return _tile_row(_worker_slides[path], level, tile_size, ty)


def _tiles_in_processes(pool: ProcessPoolExecutor, workers: int, slide: Slide, level: int,
                        tile_size: int) -> Iterator[np.ndarray]:
    """``_tiles``, the rows read by ``pool``'s processes, in order, at most ``2 * workers`` rows ahead."""
    pending: deque[Future[list[np.ndarray]]] = deque()
    try:
        for ty in range(0, slide.level_dimensions[level][1], tile_size):
            pending.append(pool.submit(_tile_row_in_worker, slide.path, level, tile_size, ty))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:  # killed (out of memory?) or unable to start: nothing is written
        raise MagnetError(f"{slide.path}: a process rendering tiles died; try fewer workers") from None
    finally:
        for future in pending:
            future.cancel()


def _check_levels(slide: Slide, levels: Sequence[int] | None) -> list[int]:
    chosen = list(range(slide.level_count)) if levels is None else [int(v) for v in levels]
    if not chosen:
        raise MagnetError(f"{slide.path}: no levels to write")
    if any(not 0 <= v < slide.level_count for v in chosen):
        raise MagnetError(f"{slide.path}: levels {chosen} out of range 0..{slide.level_count - 1}")
    if any(b <= a for a, b in zip(chosen, chosen[1:], strict=False)):
        raise MagnetError(f"{slide.path}: levels must be strictly increasing, got {chosen}")
    return chosen


def write_pyramidal_tiff(
    slide: Slide,
    path: str | Path,
    *,
    tile_size: int = 256,
    quality: int = 90,
    levels: Sequence[int] | None = None,
    workers: int = 1,
) -> None:
    """Write ``slide`` to ``path`` as a JPEG-tiled pyramidal TIFF (OpenSlide "generic tiled TIFF").

    Args:
        slide: any backend; read tile by tile with ``read_region``.
        path: the TIFF to create (replaced atomically if it exists).
        tile_size: tile side in pixels; TIFF requires a multiple of 16. 256 is what most scanners use.
        quality: JPEG quality 1..100.
        levels: indices of the slide's levels to write, strictly increasing (default: all). The first one
            becomes the file's base level; its mpp is the slide's mpp times that level's downsample.
        workers: processes reading the tiles (default 1: this one). Above 1 the slide must be one that
            ``open_slide(slide.path)`` opens again (a file or a URI such as ``synth:``); the file written is
            the same.
    """
    if tile_size <= 0 or tile_size % 16:
        raise MagnetError(f"{path}: tile_size must be a positive multiple of 16, got {tile_size}")
    if not 1 <= quality <= 100:
        raise MagnetError(f"{path}: JPEG quality must be in 1..100, got {quality}")
    if workers < 1:
        raise MagnetError(f"{path}: workers must be >= 1, got {workers}")
    chosen = _check_levels(slide, levels)
    if workers > 1:
        _check_reopens(slide)
    target = output_file(path)

    raw_bytes = sum(w * h * 3 for w, h in (slide.level_dimensions[v] for v in chosen))
    # Spawned, not forked: the caller may hold threads (torch, readers) that a fork would copy mid-lock.
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1 else None)
    with atomic_path(target) as tmp_name, _shut_down_on_exit(pool):
        with tifffile.TiffWriter(tmp_name, bigtiff=raw_bytes > _BIGTIFF_ABOVE_BYTES) as writer:
            for page, level in enumerate(chosen):
                width, height = slide.level_dimensions[level]
                extra: dict[str, object] = {}
                if slide.mpp is not None:
                    # Pixels per centimetre of *this* page: mpp grows with the level's downsample.
                    scale = slide.level_downsamples[level]
                    extra["resolution"] = (1e4 / (slide.mpp[0] * scale), 1e4 / (slide.mpp[1] * scale))
                    extra["resolutionunit"] = "CENTIMETER"
                tiles = (_tiles(slide, level, tile_size) if pool is None
                         else _tiles_in_processes(pool, workers, slide, level, tile_size))
                writer.write(
                    tiles,
                    shape=(height, width, 3),
                    dtype=np.uint8,
                    tile=(tile_size, tile_size),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    subfiletype=0 if page == 0 else 1,
                    metadata=None,  # no tifffile JSON description: readers must see a plain TIFF
                    **extra,  # type: ignore[arg-type]
                )


def _check_reopens(slide: Slide) -> None:
    """Refuse, before anything is written, a slide the worker processes could not open from its path."""
    from magnet.slides.registry import open_slide

    try:
        again = open_slide(slide.path)
    except MagnetError as exc:
        raise MagnetError(
            f"{slide.path}: workers > 1 need a slide that opens again from its path ({exc})"
        ) from None
    with again:
        if again.level_dimensions != slide.level_dimensions:
            raise MagnetError(f"{slide.path}: workers > 1 need a slide that opens again from its path (it "
                              f"opens with levels {again.level_dimensions}, not {slide.level_dimensions})")


@contextmanager
def _shut_down_on_exit(pool: ProcessPoolExecutor | None) -> Iterator[None]:
    try:
        yield
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
