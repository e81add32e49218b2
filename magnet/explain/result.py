"""What was explained for one slide, and the names of the files written for it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OUTPUT_FILES", "THUMBNAIL_SIZE", "ExplainResult"]

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
    files: dict[str, Path] = field(default_factory=dict)  # role (OUTPUT_FILES keys) -> path
    seconds: float = 0.0
    checkpoint: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error
