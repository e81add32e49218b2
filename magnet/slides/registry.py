"""``open_slide``: one entry point for files, URIs and in-memory images.

A string of the form ``scheme:rest`` whose scheme is known goes to that scheme's opener: a scheme is either
registered at run time with ``register_scheme`` or listed in ``KNOWN_SCHEMES`` as ``"module:function"``,
imported the first time such a URI is opened (the way fsspec finds its file systems). The virtual slides
(``synth:seed=17,...``, ``magnet.synth``) are such a plug-in: slide access does not depend on them.
Anything else is a file path: it must exist
and be a file, and it goes to the first file backend that can read it, preferring the backend that sees
the most pyramid levels (OpenSlide sees only the base level of an OME-TIFF SubIFD pyramid; tiffslide sees
all of them). Every failure is a ``SlideError`` naming the file and the reason; when no backend opens the
file, the reasons of the backends that recognised its format are reported (a backend raises
``NotThisFormat`` for a file that is not its format at all; those refusals are listed only when no backend
recognised the file). A backend that declares a cheap bound on the levels it would see is not opened when
one before it already sees as many (it would lose the tie anyway).

Each file backend declares the file name extensions of its formats (``register_file_backend(...,
extensions=...)``); ``slide_extensions()`` is their union, which ``magnet.slides.discovery`` uses to find
the slides in a folder. Opening never looks at the extension: the backends decide by the file's content.

``slide_identity`` says which slide a spelling names, so that manifests can refuse one slide listed twice:
a file is its resolved real path (symlinks and ``..`` followed), a URI its scheme's canonical spelling (a
scheme may register one beside its opener; ``synth:`` URIs put their keys in a fixed order and fill in
defaults), or the URI itself for a scheme without one.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from magnet.errors import MagnetError, SlideError
from magnet.slides.base import NotThisFormat, Slide
from magnet.slides.memory import IMAGE_EXTENSIONS, open_image_file
from magnet.slides.noise import native_stderr_captured
from magnet.slides.openslide_backend import OPENSLIDE_EXTENSIONS, open_openslide
from magnet.slides.tiff_backend import TIFF_EXTENSIONS, open_tiffslide, tiffslide_level_bound

SchemeOpener = Callable[[str], Slide]
FileOpener = Callable[[str], Slide]
Canonical = Callable[[str], str]


__all__ = ["KNOWN_CANONICAL", "KNOWN_SCHEMES", "NotThisFormat", "open_slide", "register_file_backend",
           "register_scheme", "slide_extensions", "slide_identity", "uri_scheme"]

#: Schemes opened by a function of another package, imported on first use: ``scheme -> "module:function"``.
KNOWN_SCHEMES: dict[str, str] = {"synth": "magnet.synth.slide:open_virtual_slide"}
_SCHEMES: dict[str, SchemeOpener] = {}
#: The canonical spelling of a scheme's URIs, imported on first use like the openers.
KNOWN_CANONICAL: dict[str, str] = {"synth": "magnet.synth.uri:canonical_uri"}
_CANONICAL: dict[str, Canonical] = {}
# (name, opener) in order of preference: OpenSlide (the most formats, thread-safe C reads), tiffslide (TIFF /
# OME-TIFF SubIFD pyramids), plain images through Pillow. Plug-ins append with register_file_backend.
_FILE_BACKENDS: list[tuple[str, FileOpener]] = [
    ("openslide", open_openslide),
    ("tiffslide", open_tiffslide),
    ("image", open_image_file),
]
# Backend name -> the file name extensions of its formats (lower case, with the dot).
_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "openslide": OPENSLIDE_EXTENSIONS,
    "tiffslide": TIFF_EXTENSIONS,
    "image": IMAGE_EXTENSIONS,
}
# Backend name -> a cheap upper bound on the levels it would see in a file (without opening it). A backend
# whose bound is no more than the levels of one already opened cannot win, so it is not opened: tiffslide's
# set-up cost ten times OpenSlide's on every generic TIFF of a cohort, for nothing.
_LEVEL_BOUNDS: dict[str, Callable[[str], int]] = {
    "tiffslide": tiffslide_level_bound,
    "image": lambda path: 1,  # a plain image is one level
}
# Two or more characters before the colon: "C:\..." is a drive letter, not a scheme.
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):(.*)$")


def register_scheme(scheme: str, opener: SchemeOpener, canonical: Canonical | None = None) -> None:
    """Make ``open_slide("scheme:...")`` call ``opener`` with the whole URI.

    ``canonical(uri)``, if given, returns the one spelling of every URI that names the same slide (for
    ``slide_identity``); it may raise a ``MagnetError`` for a URI that does not parse.
    """
    _SCHEMES[scheme.lower()] = opener
    if canonical is not None:
        _CANONICAL[scheme.lower()] = canonical


def register_file_backend(name: str, opener: FileOpener, extensions: tuple[str, ...] = (),
                          level_bound: Callable[[str], int] | None = None) -> None:
    """Add a file backend; ``opener(path)`` returns a Slide or raises (any exception means "not mine").

    ``extensions`` (``".xyz"``): the file names its formats use, so that folders are searched for them.
    ``level_bound(path)``: optional, a cheap upper bound on the levels ``opener`` would see, so that the
    backend is not opened where one before it already sees as many.
    """
    _FILE_BACKENDS[:] = [(n, o) for n, o in _FILE_BACKENDS if n != name] + [(name, opener)]
    _EXTENSIONS[name] = tuple(e.lower() for e in extensions)
    _LEVEL_BOUNDS.pop(name, None)
    if level_bound is not None:
        _LEVEL_BOUNDS[name] = level_bound


def slide_extensions() -> tuple[str, ...]:
    """The file name extensions (lower case, with the dot) of every format a file backend reads, sorted."""
    return tuple(sorted({e for name, _ in _FILE_BACKENDS for e in _EXTENSIONS.get(name, ())}))


def uri_scheme(spec: str) -> str | None:
    """The lower-case scheme of ``spec`` if it looks like a URI (``name:...``), else None (a file path)."""
    match = _URI.match(spec)
    if match is None or len(match.group(1)) < 2:
        return None
    return match.group(1).lower()


def _scheme_opener(scheme: str) -> SchemeOpener | None:
    if scheme not in _SCHEMES and scheme in KNOWN_SCHEMES:
        _SCHEMES[scheme] = _load(KNOWN_SCHEMES, scheme)  # type: ignore[assignment]
    return _SCHEMES.get(scheme)


def _load(table: dict[str, str], scheme: str) -> Callable[..., object]:
    module, function = table[scheme].split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def slide_identity(spec: str | os.PathLike[str]) -> str:
    """The one name of the slide ``spec`` names (see the module doc); never opens the slide.

    A URI that its scheme cannot parse is its own identity (opening it will report why it is bad).
    """
    text = str(spec)
    scheme = uri_scheme(text)
    if scheme is not None and _scheme_opener(scheme) is not None:
        if scheme not in _CANONICAL and scheme in KNOWN_CANONICAL:
            _CANONICAL[scheme] = _load(KNOWN_CANONICAL, scheme)  # type: ignore[assignment]
        canonical = _CANONICAL.get(scheme)
        try:
            return canonical(text) if canonical is not None else text
        except MagnetError:
            return text
    return os.path.realpath(os.path.expanduser(text))


def open_slide(spec: str | os.PathLike[str]) -> Slide:
    """Open a slide file, a registered URI (``synth:...``), or a plain image (PNG, JPEG).

    What the libraries print meanwhile is collected once the command line has hushed them
    (``magnet.slides.noise``).
    """
    with native_stderr_captured():
        return _open_slide(str(spec))


def _open_slide(text: str) -> Slide:
    if not text.strip():
        raise SlideError(repr(text), "empty slide path")
    scheme = uri_scheme(text)
    opener = _scheme_opener(scheme) if scheme is not None else None
    if opener is not None:
        return opener(text)
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
        bound = _LEVEL_BOUNDS.get(name)
        if opened and bound is not None and bound(text) <= max(s.level_count for s in opened):
            continue  # it cannot see more levels than a backend that opened the file: it would lose the tie
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
