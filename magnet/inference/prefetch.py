"""Open slides and read their root views ahead of the model, on reader threads, in a bounded queue.

Over a cohort, the model waits for every slide's file to be opened (headers, tile index) and for its root
views to be read before its first layer can run; the slide after it need not wait for the model. So
``SlideFeeder`` opens the next slides on ``workers`` threads while the model computes, and reads each one's
root views (``MagNet.root_view_sizes``: the first reads of every forward pass) into a ``PrereadSource``,
which hands them to the model instead of reading again. At most ``ahead`` slides are held beyond the one
handed out (open files and root views, a few megabytes each), so memory stays bounded however long the
cohort is. With ``ahead=0`` nothing overlaps: each slide is opened when it is asked for and the model reads
its root views itself (the baseline ``bench/bench_prefetch.py`` compares against).

The views are those the model would read itself (same ROIs, same reader), so predictions do not depend on
prefetching. Slides come out in the order given. A slide that cannot be opened or read comes out as a
``Loaded`` with its one-line ``error`` (``SlideError``'s text, which names the slide); so does any other
failure of the slide libraries, as ``<slide>: <exception type>: <message>``: one bad file never stops a
cohort.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from magnet.errors import MagnetError
from magnet.slides.base import Slide
from magnet.slides.colour import normaliser
from magnet.slides.reader import RegionReader
from magnet.slides.registry import open_slide

__all__ = ["Loaded", "PrereadSource", "SlideFeeder"]


class PrereadSource:
    """A ``RegionReader`` whose root views (the identity ROI at given sizes) were read in advance.

    ``read`` returns a pre-read view once, for the identity ROI at its size; everything else is read by the
    reader. ``slide`` and ``slide_size`` are the reader's.
    """

    def __init__(self, reader: RegionReader) -> None:
        self.reader = reader
        self._views: dict[int, torch.Tensor] = {}
        self._closed = False

    @property
    def slide(self) -> Slide:
        return self.reader.slide

    @property
    def slide_size(self) -> tuple[int, int]:
        return self.reader.slide_size

    def preread(self, sizes: Sequence[int]) -> None:
        """Read the identity ROI at each of ``sizes`` now (``SlideError`` if the slide cannot be read)."""
        root = torch.eye(3, dtype=torch.float64).unsqueeze(0)
        for size in dict.fromkeys(sizes):
            self._views[size] = self.reader.read(root, size)

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        view = self._views.get(size)
        if view is not None and rois.shape[0] == 1 and torch.equal(rois[0].detach().cpu().double(), _EYE):
            del self._views[size]  # the model reads each root view once per forward pass
            return view
        return self.reader.read(rois, size)

    def close(self) -> None:
        """Close the reader's thread pool and the slide file (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        self._views.clear()
        self.reader.close()
        self.reader.slide.close()


_EYE = torch.eye(3, dtype=torch.float64)


@dataclass
class Loaded:
    """One slide as the feeder hands it out: a source ready for the model, or the reason there is none."""

    slide: str
    source: PrereadSource | None = None
    error: str = ""
    seconds: float = 0.0  # opening and pre-reading (on a reader thread when prefetching)


class SlideFeeder:
    """Iterate over ``slides`` as ``Loaded`` items, opened ``ahead`` slides in advance on ``workers`` threads.

    ``root_sizes``: the root views to read in advance (``MagNet.root_view_sizes()``); ``grey_filter`` and
    ``reader_threads`` configure each slide's ``RegionReader`` as the checkpoint's recipe did. Use as a
    context manager (or call ``close``): leaving it early (an interruption) waits for the reads in flight and
    closes every slide not handed out. The caller closes the sources it was handed.
    """

    def __init__(self, slides: Sequence[str], *, root_sizes: Sequence[int], grey_filter: bool = True,
                 reader_threads: int = 1, workers: int = 2, ahead: int = 2, stain_norm: str = "none") -> None:
        if workers < 1 or ahead < 0 or reader_threads < 1:
            raise ValueError(f"need workers >= 1, ahead >= 0, reader_threads >= 1; got {workers}, {ahead}, "
                             f"{reader_threads}")
        self.slides = list(slides)
        self.root_sizes = tuple(root_sizes)
        self.grey_filter = grey_filter
        self.reader_threads = reader_threads
        self.normalise = normaliser(stain_norm)  # stain normalisation of every read (None: off)
        self.ahead = ahead
        self._pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slide-feeder") if ahead
                      else None)
        self._pending: deque[Future[Loaded]] = deque()
        self._next = 0

    def __enter__(self) -> SlideFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Loaded]:
        while self._next < len(self.slides) or self._pending:
            if self._pool is None:
                spec = self.slides[self._next]
                self._next += 1
                yield self._load(spec, preread=False)
                continue
            self._top_up()
            yield self._pending.popleft().result()

    def _top_up(self) -> None:
        """Keep the slide handed out next and ``ahead`` more in flight."""
        assert self._pool is not None
        while self._next < len(self.slides) and len(self._pending) < self.ahead + 1:
            self._pending.append(self._pool.submit(self._load, self.slides[self._next], preread=True))
            self._next += 1

    def _load(self, spec: str, *, preread: bool) -> Loaded:
        t0 = time.perf_counter()
        source = None
        try:
            reader = RegionReader(open_slide(spec), grey_filter=self.grey_filter, threads=self.reader_threads)
            source = PrereadSource(reader if self.normalise is None else self.normalise(reader))
            if preread:
                source.preread(self.root_sizes)
        except Exception as exc:  # noqa: BLE001 - a bad slide is a failure row, never the end of the cohort
            if source is not None:
                source.close()
            return Loaded(spec, error=_one_line(spec, exc), seconds=time.perf_counter() - t0)
        return Loaded(spec, source, seconds=time.perf_counter() - t0)

    def close(self) -> None:
        """Stop: cancel the slides not started, wait for those being read, close all not handed out."""
        if self._pool is None:
            return
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        for future in self._pending:
            if not future.cancelled() and future.exception() is None:
                loaded = future.result()
                if loaded.source is not None:
                    loaded.source.close()
        self._pending.clear()
        self._pool = None


def _one_line(spec: str, exc: BaseException) -> str:
    """The error of a slide that failed: a ``MagnetError``'s own line (it names the slide), else the slide,
    the exception type and its message on one line."""
    if isinstance(exc, MagnetError):
        return " ".join(str(exc).split())
    message = " ".join(str(exc).split())
    return f"{spec}: {type(exc).__name__}{': ' + message if message else ''}"
