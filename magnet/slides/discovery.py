"""Find the slide files in a folder: every file, at any depth, whose extension a file backend reads.

``find_slides(folder)`` lists them sorted by their path relative to the folder, so that two runs over one
folder see the same order. Hidden files and folders (a leading dot: ``.git``, ``.DS_Store``, our own
temporary files) are skipped, and so are folders that belong to a slide rather than hold slides: MIRAX's
``<name>/`` data folder beside ``<name>.mrxs``.

A DICOM whole-slide image is usually a folder of files, one per level (and its label and overview), all of
one series, which OpenSlide opens from any of them. So where a folder holds several ``.dcm`` files, their
headers are read (``dicom_series_uid``) and the first file of each series (by name) stands for the slide;
a file whose series cannot be read is listed on its own (predicting it records why). OpenSlide reads the
headers of a DICOM file's whole folder at every opening, so this costs what opening those slides costs.
"""

from __future__ import annotations

import os
from pathlib import Path

from magnet.errors import MagnetError
from magnet.slides.openslide_backend import dicom_series_uid
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
        found += _one_file_per_dicom_series(sorted(Path(here) / f for f in files
                                                   if is_slide_file(Path(f), extensions)))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _one_file_per_dicom_series(files: list[Path]) -> list[Path]:
    """``files`` (of one folder, sorted) without the ``.dcm`` files of a series already listed."""
    dicom = [f for f in files if f.name.lower().endswith(".dcm")]
    if len(dicom) < 2:
        return files
    seen: set[str] = set()
    kept = []
    for path in files:
        series = dicom_series_uid(str(path)) if path in dicom else None
        if series is not None and series in seen:
            continue
        if series is not None:
            seen.add(series)
        kept.append(path)
    return kept
