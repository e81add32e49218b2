"""The slides of a cohort: any mix of slide files, URIs, folders and a manifest, each slide once.

``gather_slides(inputs, manifest)`` resolves ``magnet predict``'s inputs into one list of slides:

- a folder is searched at any depth for the file types the slide backends read
  (``magnet.slides.discovery``); a folder without any is a one-line error (a mistyped folder, not an empty
  day), raised before any slide is read;
- a file is taken as given, whatever its name (a missing or unreadable one becomes a failure row when it is
  predicted, like any slide that cannot be read);
- a URI (``synth:...``) is taken as given;
- ``--manifest`` adds the rows of a manifest CSV (``magnet.data.manifest``: validated, all problems listed
  at once; its labels are not used).

Files are named by absolute paths, so that a record of the cohort (``predict --out``) names them the same
from any working folder. A slide named twice (under two spellings too, ``slide_identity``) is kept once,
at its first place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from magnet.data.manifest import read_manifest
from magnet.errors import MagnetError
from magnet.slides.discovery import find_slides
from magnet.slides.registry import slide_extensions, slide_identity, uri_scheme

__all__ = ["gather_slides"]


def gather_slides(inputs: Sequence[str], manifest: str | os.PathLike[str] | None = None) -> list[str]:
    """The slides of ``inputs`` and ``manifest``, in order, each once (see the module doc)."""
    found: list[str] = []
    for text in inputs:
        path = Path(text)
        if uri_scheme(text) is not None and not path.exists():
            found.append(text)
        elif path.is_dir():
            slides = find_slides(path)
            if not slides:
                raise MagnetError(f"{text}: no slide files in this folder or below (looked for "
                                  f"{' '.join(slide_extensions())})")
            found += [os.path.abspath(p) for p in slides]
        else:
            found.append(os.path.abspath(text) if text.strip() else text)
    if manifest is not None:
        found += [row.slide for row in read_manifest(manifest, check_slides=False).rows]
    if not found:
        raise MagnetError("no slides to predict: give slide files, folders or URIs, or --manifest")
    seen: set[str] = set()
    unique = []
    for spec in found:
        identity = slide_identity(spec)
        if identity not in seen:
            seen.add(identity)
            unique.append(spec)
    return unique
