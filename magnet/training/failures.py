"""Slides that fail to read during a run: logged once, skipped, listed after each epoch, counted.

One corrupt file among thousands should cost its own slide, not the run: a slide whose read fails (a
``SlideError``: a truncated file, a missing tile, a file gone from a mount) is reported the first time,
left out from then on (the rest of its batch still trains), and listed at the end of every epoch. Many
failures mean something else is wrong (a mount that went away, the wrong copy of a data set), so the run
stops with one line once more than ``data.max_failed_share`` of a split's slides has failed.

Slides are compared by their identity (``magnet.slides.slide_identity``), so an error that names a slide by
another spelling (a virtual slide's canonical URI) is still matched to its manifest row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from magnet.errors import MagnetError
from magnet.slides.registry import slide_identity

__all__ = ["SlideFailures"]

# How many failed slides an epoch's summary line names before "... and N more".
LISTED = 5


class SlideFailures:
    """The failed slides of one split (``name``: "train", "validation") of ``total`` slides."""

    def __init__(self, name: str, total: int, max_share: float, *,
                 echo: Callable[[str], object] = print) -> None:
        self.name, self.total, self.max_share = name, total, max_share
        self.echo = echo
        self.reasons: dict[str, str] = {}  # identity -> the first error, in the order found

    def __contains__(self, slide: str) -> bool:
        return slide_identity(slide) in self.reasons

    def __len__(self) -> int:
        return len(self.reasons)

    def add(self, slide: str, reason: str) -> bool:
        """Record a failure of ``slide``; logged the first time only. True when it was new."""
        key = slide_identity(slide)
        if key in self.reasons:
            return False
        self.reasons[key] = reason
        self.echo(f"magnet: skipping {self.name} slide from now on: {reason}")
        return True

    def merge(self, reasons: Mapping[str, str]) -> None:
        """Take failures found elsewhere (another rank, a checkpoint) without logging them again."""
        for key, reason in reasons.items():
            self.reasons.setdefault(key, reason)

    def check(self, count: int | None = None) -> None:
        """Stop the run (one-line ``MagnetError``) when more than the allowed share has failed.

        ``count`` overrides ``len(self)`` where failures are counted across processes.
        """
        n = len(self) if count is None else count
        if n > self.max_share * self.total:
            first = next(iter(self.reasons.values()), "on another process")
            raise MagnetError(
                f"{n} of {self.total} {self.name} slides could not be read, more than "
                f"data.max_failed_share={self.max_share:g} allows (first: {first}); fix or remove them, or "
                "raise data.max_failed_share"
            )

    def summary(self, epoch: int) -> str:
        """One line for the end of epoch ``epoch`` (1-based): the skipped slides, "" when none."""
        if not self.reasons:
            return ""
        items: Iterable[str] = list(self.reasons.values())[:LISTED]
        more = len(self) - LISTED
        tail = f"; ... and {more} more" if more > 0 else ""
        return (f"magnet: epoch {epoch}: {len(self)} of {self.total} {self.name} slides skipped "
                f"(unreadable): {'; '.join(items)}{tail}")
