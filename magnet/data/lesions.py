"""Lesion classes and the lesion-outline file: the ground truth a slide-level label comes with.

Classes follow Camelyon17 (Bandi et al., "From detection of individual metastases to classification of lymph
node status at the patient level", IEEE TMI 38(2), 2019), by the largest extent of the largest metastasis:
macro-metastasis > 2 mm, micro-metastasis > 0.2 mm and <= 2 mm, isolated tumour cells (ITC) <= 0.2 mm.

The outline file (``lesions.json``) maps a slide name (a path or a ``synth:`` URI) to its lesions, each a
dict with at least ``polygon``: a list of ``[x, y]`` vertices in level-0 pixels. ``magnet synth dataset``
writes one beside its manifest and names it in the manifest's ``lesions`` column; evaluation reads it to
say whether the final patches landed on a lesion.

A look-alike file (``lookalikes.json``, the manifest's ``lookalikes`` column) has the same form for benign
regions that mimic a lesion (``magnet.synth``'s germinal centres, histiocyte clusters...): the hard
negatives that the oracle control can read on negative slides (docs/method.md §8).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

from magnet import strict_json
from magnet.atomic import atomic_write_text

LesionClass = Literal["negative", "macro", "micro", "itc"]
#: Every class a manifest row may carry, the negative one first (the values of ``LesionClass``).
LESION_CLASSES: tuple[str, ...] = get_args(LesionClass)
#: The metastasis classes, largest first.
POSITIVE_CLASSES: tuple[str, ...] = LESION_CLASSES[1:]
#: What the metrics call a positive slide of unknown class (Table 1 counts it in "All" only).
UNKNOWN_POSITIVE = "positive"
#: Camelyon17 thresholds on the largest extent, in micrometres.
MACRO_UM, ITC_UM = 2000.0, 200.0
#: Name of the outline file ``magnet synth dataset`` writes beside its manifest.
LESIONS_FILE = "lesions.json"
#: Name of the look-alike outline file ``magnet synth dataset`` writes beside it (same form).
LOOKALIKES_FILE = "lookalikes.json"


def lesion_class_for_extent(extent_um: float) -> str:
    """Camelyon17 class of a lesion from its largest extent in micrometres."""
    if extent_um > MACRO_UM:
        return "macro"
    if extent_um > ITC_UM:
        return "micro"
    return "itc"


def slide_class(lesion_class: str | None, label: int) -> str:
    """A slide's class for the metrics: its lesion class, else "negative" or ``UNKNOWN_POSITIVE`` by label."""
    return lesion_class or (UNKNOWN_POSITIVE if label else "negative")


def write_lesions(outlines: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike[str]) -> None:
    """Write outline dicts (lesions or look-alikes) by slide name as compact JSON, atomically."""
    atomic_write_text(path, strict_json.dumps(outlines, separators=(",", ":")) + "\n")


def read_lesions(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Polygons ``(V, 2)`` in level-0 pixels by slide name, from a file ``write_lesions`` wrote."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return {uri: [np.asarray(item["polygon"], float) for item in items] for uri, items in data.items()}
