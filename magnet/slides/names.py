"""File-system names for slides: a slide's outputs live under a name made from its path or URI."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["safe_slide_name", "stable_slide_name"]


def safe_slide_name(spec: str) -> str:
    """A folder name for a slide: its file name without extension, or its URI, in ``[A-Za-z0-9._-]``."""
    base = spec.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if Path(spec).is_file():
        base = Path(spec).stem
    # [choice] 96 characters keep the path short on every file system while telling virtual slides apart.
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")[:96]
    return name or "slide"


def stable_slide_name(spec: str, identity: str) -> str:
    """``safe_slide_name(spec)`` and 8 hex digits of a hash of the slide's ``identity``
    (``magnet.slides.registry.slide_identity``): the same for a slide in every run and whatever else is in
    the run, distinct for two slides of one file name in different folders (or differing only in case)."""
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe_slide_name(spec)}-{digest}"
