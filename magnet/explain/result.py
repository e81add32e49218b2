"""What was explained for one slide, and the names of the files written for it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from magnet.slides.registry import uri_scheme

__all__ = ["OUTPUT_FILES", "THUMBNAIL_SIZE", "ExplainResult", "display_slide_name"]

# File names inside a slide's folder, by role.
OUTPUT_FILES = {
    "rois_png": "rois.png",
    "patches_png": "patches.png",
    "geojson": "rois.geojson",
    "report": "report.html",
}
# The thumbnail's longer side in pixels: enough to see lymph-node structure, small enough for a page.
THUMBNAIL_SIZE = 1024


@dataclass
class ExplainResult:
    """What was explained for one slide, and where it was written (``error`` set when it failed)."""

    slide: str  # the spec as given (path or URI)
    name: str = ""  # the slide's folder name under the output folder
    out_dir: Path | None = None
    probability: float = math.nan
    running_probabilities: list[float] = field(default_factory=list)  # after each final patch
    slide_size: tuple[int, int] = (0, 0)  # level-0 (width, height)
    mpp: tuple[float, float] | None = None
    patches_per_layer: tuple[int, ...] = ()
    boxes: list[list[list[float]]] = field(default_factory=list)  # per layer, per ROI: level-0 box
    final_patch_pixels: int | None = None  # side of the final patches the classifier read, pixels
    files: dict[str, Path] = field(default_factory=dict)  # role (OUTPUT_FILES keys) -> path
    seconds: float = 0.0
    checkpoint: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def display_name(self) -> str:
        """The slide as a reader names it: a file's name without its folders, a URI (``synth:...``) whole."""
        return display_slide_name(self.slide)


def display_slide_name(spec: str) -> str:
    """``spec``'s last path component when it is a path, the whole ``spec`` when it is a URI."""
    if uri_scheme(spec) is not None:
        return spec
    return spec.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or spec
