"""Find the slide files in a folder: every file, at any depth, whose extension a file backend reads.

``find_slides(folder)`` lists them sorted by their path relative to the folder, so that two runs over one
folder see the same order. Hidden files and folders (a leading dot: ``.git``, ``.DS_Store``, our own
temporary files) are skipped, and so are folders that belong to a slide rather than hold slides: MIRAX's
``<name>/`` data folder beside ``<name>.mrxs``.

[choice] A DICOM whole-slide image stored as one file per level is listed once per file: telling the files
of one series apart needs their headers, which a search does not read. Give such slides by one file each,
or in a manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

from magnet.errors import MagnetError
from magnet.slides.registry import slide_extensions

__all__ = ["find_slides", "is_slide_file"]


def is_slide_file(path: Path, extensions: tuple[str, ...] | None = None) -> bool:
    """Whether ``path``'s name ends in an extension a file backend reads (case-insensitive)."""
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(extensions or slide_extensions())


def find_slides(folder: str | os.PathLike[str]) -> list[Path]:
    """Every slide file under ``folder`` (recursively), sorted by relative path; ``MagnetError`` when the
    folder cannot be listed."""
    root = Path(folder)
    extensions = slide_extensions()
    found: list[Path] = []

    def refuse(exc: OSError) -> None:
        raise MagnetError(f"{exc.filename or root}: cannot list the folder ({exc.strerror or exc})")

    for here, dirs, files in os.walk(root, onerror=refuse, followlinks=True):
        mrxs = {Path(f).stem for f in files if f.lower().endswith(".mrxs")}
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in mrxs)
        found += [Path(here) / f for f in files if is_slide_file(Path(f), extensions)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
