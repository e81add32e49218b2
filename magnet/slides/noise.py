"""Slide libraries talk on standard error; the command says one line.

A corrupt slide makes its libraries print: C code writes warnings straight to file descriptor 2 (libtiff,
libjpeg, through OpenSlide), Python libraries log (tifffile; zarr's asyncio tasks left pending by a failed
tile read log "Task was destroyed but it is pending!" once per tile when they are collected) and raise
Python warnings. Hundreds of such lines bury the one that matters: our own error, which already names the
slide and the reason. So the command line calls ``hush_libraries()`` once, and then:

- the log records of ``LIBRARY_LOGGERS`` and every Python warning go to a collector instead of the
  terminal;
- what C code writes to standard error while a slide is opened or read (``native_stderr_captured``, used
  by ``open_slide`` and ``RegionReader.read``) goes there too;
- ``terminal_stderr()`` is a standard error that stays the terminal's while C output is being collected:
  a progress bar or a status line written by the main thread while a reader thread opens a slide would
  otherwise be collected as library noise;
- ``noise_summary()`` reduces what was collected to one line (how many messages, and the first), which the
  command prints when it succeeds; when it fails, its one-line error is all it prints.

Without ``hush_libraries()`` (the package used as a library) nothing is redirected: the caller's process,
the caller's terminal. The redirection of file descriptor 2 is process-wide, so it is counted: reads on
several threads at once share one redirection, undone by the last to finish.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

__all__ = ["LIBRARY_LOGGERS", "hush_libraries", "native_stderr_captured", "noise_summary", "terminal_stderr"]

#: Loggers of the libraries under the slide backends (and ``py.warnings``, where warnings go once hushed).
LIBRARY_LOGGERS = ("asyncio", "tifffile", "tiffslide", "zarr", "numcodecs", "imagecodecs", "PIL", "openslide",
                   "py.warnings")


class _Collector(logging.Handler):
    """Counts the messages it receives and keeps the first one's first line."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.count = 0
        self.first = ""

    def add(self, line: str) -> None:
        line = " ".join(line.split())
        if line:
            self.count += 1
            self.first = self.first or line

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.add(record.getMessage().splitlines()[0] if record.getMessage() else "")


_COLLECTOR = _Collector()
_STATE = threading.Lock()
_hushed = False
_depth = 0
_saved_fd: int | None = None
_sink: IO[bytes] | None = None


def hush_libraries() -> None:
    """Collect the libraries' log records, Python warnings and C-level standard error from now on."""
    global _hushed
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _COLLECTOR not in logger.handlers:
            logger.addHandler(_COLLECTOR)
        logger.propagate = False  # not also to the root logger and its last-resort handler (the terminal)
    _hushed = True


def noise_summary() -> str:
    """One line on what was collected since the last call ("" when nothing was), and start over."""
    gc.collect()  # pending tasks of failed reads log when they are collected: now, not at exit
    count, first = _COLLECTOR.count, _COLLECTOR.first
    _COLLECTOR.count, _COLLECTOR.first = 0, ""
    if not count:
        return ""
    noun = "message" if count == 1 else "messages"
    return f"{count} {noun} of the slide libraries hidden (first: {first[:200]})"


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    """While inside, what C code writes to file descriptor 2 is collected (only once hushed)."""
    if not _hushed:
        yield
        return
    _enter()
    try:
        yield
    finally:
        _leave()


class _TerminalStderr(io.TextIOBase):
    """Writes to ``sys.stderr``, or past the collector to the saved terminal while C output is collected."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(sys.stderr, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        stream = sys.stderr
        with _STATE:
            if _saved_fd is not None and _is_fd2(stream):
                data = text.encode(self.encoding, "replace")
                while data:
                    data = data[os.write(_saved_fd, data):]
                return len(text)
        return stream.write(text)

    def flush(self) -> None:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass


def _is_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False


_TERMINAL = _TerminalStderr()


def terminal_stderr() -> IO[str]:
    """Standard error for the command's own output (progress bars, status lines) from the main thread.

    It is ``sys.stderr``, except while slide libraries' C output is being collected on another thread
    (``native_stderr_captured``): then it writes to the terminal that file descriptor 2 was before.
    """
    return _TERMINAL  # type: ignore[return-value]


def _enter() -> None:
    global _depth, _saved_fd, _sink
    with _STATE:
        _depth += 1
        if _depth > 1:
            return
        if _sink is None:
            _sink = tempfile.TemporaryFile()
        try:
            sys.stderr.flush()  # what Python wrote before goes to the terminal, not the sink
        except (AttributeError, OSError, ValueError):
            pass
        _saved_fd = os.dup(2)
        os.dup2(_sink.fileno(), 2)


def _leave() -> None:
    global _depth, _saved_fd
    with _STATE:
        _depth -= 1
        if _depth > 0 or _saved_fd is None or _sink is None:
            return
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        _saved_fd = None
        _sink.seek(0)
        text = _sink.read().decode("utf-8", "replace")
        _sink.seek(0)
        _sink.truncate()
    for line in text.splitlines():
        _COLLECTOR.add(line)
