"""``open_slide``: one entry point for files, URIs and in-memory images.

A string of the form ``scheme:rest`` whose scheme was registered with ``register_scheme`` (e.g. the virtual
slides' ``synth:seed=17,...``) goes to that scheme's opener. Anything else is a file path: it must exist
and be a file, and it goes to the first file backend that can read it, preferring the backend that sees
the most pyramid levels (OpenSlide sees only the base level of an OME-TIFF SubIFD pyramid; tiffslide sees
all of them). Every failure is a ``SlideError`` naming the file and the reason; when no backend opens the
file, the reasons of the backends that recognised its format are reported (a backend raises
``NotThisFormat`` for a file that is not its format at all; those refusals are listed only when no backend
recognised the file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from magnet.errors import SlideError
from magnet.slides.base import Slide

SchemeOpener = Callable[[str], Slide]
FileOpener = Callable[[str], Slide]


class NotThisFormat(SlideError):
    """Raised by a file backend for a file that is not in its format at all (not merely broken).

    ``open_slide`` reports these refusals only when no backend recognised the file, so the message for a
    recognised-but-broken file (a DICOM OpenSlide refuses, a truncated TIFF) names the real problem.
    """


_SCHEMES: dict[str, SchemeOpener] = {}
# (name, opener) in order of preference; filled by magnet.slides.__init__ and by plug-ins.
_FILE_BACKENDS: list[tuple[str, FileOpener]] = []
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):(.*)$")


def register_scheme(scheme: str, opener: SchemeOpener) -> None:
    """Make ``open_slide("scheme:...")`` call ``opener`` with the whole URI."""
    _SCHEMES[scheme.lower()] = opener


def register_file_backend(name: str, opener: FileOpener) -> None:
    """Add a file backend; ``opener(path)`` returns a Slide or raises (any exception means "not mine")."""
    _FILE_BACKENDS[:] = [(n, o) for n, o in _FILE_BACKENDS if n != name] + [(name, opener)]


def _scheme_of(spec: str) -> str | None:
    match = _URI.match(spec)
    if match is None or len(match.group(1)) < 2:  # "C:\..." is a drive letter, not a scheme
        return None
    scheme = match.group(1).lower()
    return scheme if scheme in _SCHEMES else None


def open_slide(spec: str | os.PathLike[str]) -> Slide:
    """Open a slide file, a registered URI (``synth:...``), or a plain image (PNG, JPEG)."""
    import magnet.slides  # noqa: F401 - registers the built-in backends
    import magnet.synth  # noqa: F401 - registers the synth: scheme (virtual slides)

    text = str(spec)
    if not text.strip():
        raise SlideError(repr(text), "empty slide path")
    scheme = _scheme_of(text)
    if scheme is not None:
        return _SCHEMES[scheme](text)
    path = Path(text)
    if not path.exists():
        raise SlideError(text, "no such file")
    if path.is_dir():
        raise SlideError(text, "is a directory, not a slide file")
    if path.stat().st_size == 0:
        raise SlideError(text, "file is empty")
    if not os.access(path, os.R_OK):
        raise SlideError(text, "permission denied")

    refusals: list[str] = []  # "not my format"
    failures: list[str] = []  # "my format, but I cannot read it"
    opened: list[Slide] = []
    for name, opener in _FILE_BACKENDS:
        try:
            opened.append(opener(text))
        except NotThisFormat as exc:
            refusals.append(f"{name}: {exc.reason}")
        except SlideError as exc:
            failures.append(f"{name}: {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - any backend failure means "try the next one"
            failures.append(f"{name}: {' '.join(str(exc).split()) or type(exc).__name__}")
    if not opened:
        if failures:
            raise SlideError(text, f"corrupt or unsupported slide ({'; '.join(failures)})")
        if refusals:
            raise SlideError(text, f"unsupported file format ({'; '.join(refusals)})")
        raise SlideError(text, "no slide backend is available")
    # The backend that sees the most levels wins; ties keep the order of preference.
    best = max(opened, key=lambda s: s.level_count)
    for other in opened:
        if other is not best:
            other.close()
    return best
