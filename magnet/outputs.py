"""Output paths are checked before the work: created, or refused with one line naming the path and why.

A command that computes for an hour and then finds its output folder missing, read-only or taken by a file
has wasted the hour (and used to end in a traceback). So every command calls ``output_folder`` or
``output_file`` for each of its outputs first: the folder is created (parents too) and proven writable by
creating and removing a small hidden file in it, which answers for permissions, read-only mounts and
full quotas alike, where ``os.access`` would not (it answers "yes" to root on a read-only mount).

Writing the outputs themselves is ``magnet.atomic``'s job.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from magnet.errors import MagnetError

__all__ = ["LOCK_FILE", "lock_file", "lock_folder", "output_file", "output_folder"]

# The lock file of a folder one magnet command writes into (a training run, a cohort's predictions).
LOCK_FILE = ".magnet.lock"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _create(folder: Path, shown: Path) -> None:
    """Create ``folder`` and prove it writable; ``shown`` is the path the error names."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():  # the folder, or a folder above it, is a file
        raise MagnetError(f"{shown}: cannot write here: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MagnetError(f"{shown}: cannot create the folder {folder} ({_reason(exc)})") from None
    probe = folder / f".magnet-probe-{uuid.uuid4().hex[:12]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise MagnetError(f"{shown}: cannot write in the folder {folder} ({_reason(exc)})") from None
    probe.unlink(missing_ok=True)


def output_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` if needed and check it can be written; return it as a ``Path``."""
    folder = Path(path)
    _create(folder, folder)
    return folder


def output_file(path: str | os.PathLike[str]) -> Path:
    """Check that the file ``path`` can be written (its folder created if needed); nothing is written to it.

    An existing file is fine (outputs are replaced atomically); an existing folder of that name is not.
    """
    target = Path(path)
    if target.is_dir():
        raise MagnetError(f"{target}: is a folder; give the name of a file to write")
    _create(target.parent if str(target.parent) else Path("."), target)
    return target


def lock_folder(folder: str | os.PathLike[str], refusal: str) -> FileLock:
    """Hold an OS lock on ``folder/.magnet.lock`` (the folder must exist) and return it; release it when done.

    Another process holding it is refused at once with ``MagnetError(refusal)``. The OS drops the lock when
    its process dies, so a killed command never leaves a folder locked; the file itself stays (removing it
    would race with the next owner) and means nothing on its own.
    """
    return lock_file(Path(folder) / LOCK_FILE, refusal)


def lock_file(path: str | os.PathLike[str], refusal: str) -> FileLock:
    """Hold an OS lock on the file ``path`` (created if needed), as ``lock_folder`` does on a folder's.

    For the writers that share one folder, each holding a lock of its own (the ranks of a multi-process
    ``magnet predict``).
    """
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MagnetError(refusal) from None
    return lock
