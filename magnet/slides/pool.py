"""Open slides once, keep a bounded number open, hand out ``RegionReader``s to the model.

Training visits the same slides every epoch; reopening a real slide file costs a parse of its header and
tile index, so readers are kept in a small LRU. A virtual slide's layout is drawn once per process
(``magnet.synth.slide``), so reopening one costs little.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from magnet.slides.reader import RegionReader
from magnet.slides.registry import open_slide


class SlidePool:
    """An LRU of open slides, each wrapped in a ``RegionReader``.

    ``wrap`` (optional) maps each reader to the source handed out, e.g. a stain normaliser
    (``magnet.slides.colour.normaliser``); it keeps the reader's attributes (``slide``, counters).
    """

    def __init__(self, *, grey_filter: bool = True, threads: int = 2, max_open: int = 64,
                 wrap: Callable[[RegionReader], Any] | None = None) -> None:
        self.wrap = wrap
        self.grey_filter = grey_filter
        self.threads = threads
        self.max_open = max(1, max_open)
        self._readers: OrderedDict[str, RegionReader] = OrderedDict()

    def get(self, spec: str) -> RegionReader:
        """The reader of ``spec`` (path or URI), opening the slide if needed (``SlideError`` if it fails)."""
        reader = self._readers.pop(spec, None)
        if reader is None:
            slide = open_slide(spec)
            reader = RegionReader(slide, grey_filter=self.grey_filter, threads=self.threads)
            if self.wrap is not None:
                reader = self.wrap(reader)
        self._readers[spec] = reader
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            old.close()  # its thread pool
            old.slide.close()
        return reader

    @property
    def pixels_decoded(self) -> int:
        return sum(r.pixels_decoded for r in self._readers.values())

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
            reader.slide.close()
        self._readers.clear()
