"""Atomic file output: write a temporary file beside the target, then ``os.replace`` it.

A reader (or a resumed run after ``Ctrl-C`` or a crash) sees either the old file or the complete new one,
never half of it. ``os.replace`` is atomic on POSIX and Windows when both paths are on one file system,
which is why the temporary file lives in the target's own folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    The caller writes the temporary path with any library (``torch.save``, ``savefig``...). Its data are
    flushed to disk (``fsync``) before the rename so that a power loss cannot leave an empty file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A hidden, unique name in the same folder; created by the writer with the usual umask permissions
    # (mkstemp would make it 0600 and the final file would inherit that).
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8", newline=newline) as handle:
        handle.write(text)
