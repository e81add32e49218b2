"""Virtual-slide URIs: ``synth:seed=17,size=100000x100000,lesion=micro[,mpp=..,version=..,centre=..]``.

Parsing is strict (docs/virtual-slides.md): an unknown or repeated key, a malformed value or a missing
``seed`` raises ``SlideError(uri, reason)`` with a one-line reason. ``lesion`` may be left out; the class is
then drawn from the seed with the Camelyon17 mix (``CLASS_MIX``), so that every seed names one
slide. ``SynthSpec.uri`` is the canonical spelling (fixed key order, defaults left out except seed, size and
lesion), which is what ``VirtualSlide.path`` and the manifests carry.

``version`` names the generator: 1 (the default, also when the key is absent) is the original layout and
renderer, 2 the lymph-node anatomy with look-alikes (docs/virtual-slides.md, "Version 2"), 3 the same with
the look-alikes placed blind to the lesions ("Version 3"), 4 version 3 with a nest pattern at 8-16 um/px on
some lesions and fewer look-alikes ("Version 4"). The canonical URI writes ``version=2`` / ``3`` / ``4`` and
never ``version=1``, so every URI written before versions existed keeps its meaning. New data sets are
version 3 unless told otherwise (``DEFAULT_VERSION``).

``centre`` names a stain-and-scanner profile (``magnet.synth.centres``) applied to every region the slide
renders. Absent means ``reference``, the identity; the canonical URI leaves ``centre=reference`` out, so a
URI written before centres existed, and the same slide with ``centre=reference``, are one slide.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magnet.data.lesions import LESION_CLASSES
from magnet.errors import SlideError
from magnet.slides.registry import uri_scheme
from magnet.synth.centres import CENTRES, DEFAULT_CENTRE

SCHEME = "synth"
# The class mix of Camelyon17's public training part (Bandi et al. 2019: 318 of 500 nodes negative, positives
# about 40 % macro, 35 % micro, 25 % ITC): the class a URI without lesion= gets, and a data set's mix.
CLASS_MIX = {"negative": 0.64, "macro": 0.36 * 0.40, "micro": 0.36 * 0.35, "itc": 0.36 * 0.25}
TEXTURES = ("procedural", "camelyon16")
# 100,000 px at 0.25 um/px is a 25 mm slide at 40x, the size of a Camelyon lymph-node slide.
DEFAULT_SIZE = (100_000, 100_000)
DEFAULT_MPP = 0.25
# Smallest slide: below this the pyramid and the tissue layout degenerate; largest: int32-safe maths.
MIN_SIDE, MAX_SIDE = 256, 2_000_000
# Generator versions: 1 the original, 2 lymph-node anatomy and look-alikes, 3 look-alikes blind to lesions,
# 4 version 3 with a nest pattern at 8-16 um/px on some lesions and fewer look-alikes (nests.py).
VERSIONS = (1, 2, 3, 4)
# The generator version a new data set is written with unless told otherwise: 3, lymph-node anatomy with
# look-alikes, on which a lesion cannot be told from benign tissue without magnification (docs/BENCHMARKS.md,
# "Resolution curve"), and on which nothing outside the lesion differs between a small-lesion slide and a
# negative one (version 2's positives lost look-alikes to their lesions: docs/virtual-slides.md, "Version 3").
# Versions 1 and 2 stay available (``version=1``, ``version=2``) and render as they always did; benchmarks
# recorded before each switch name them. The manifest records the version of every slide
# (``generator_version``), and the URIs say it too (``version=3``; a URI without the key is version 1).
DEFAULT_VERSION = 3
_KEYS = ("seed", "size", "lesion", "mpp", "texture", "texture_dir", "version", "centre")
_SIZE = re.compile(r"([0-9]+)x([0-9]+)")


def default_texture_dir() -> Path:
    """The Camelyon16 patches shipped inside the package: ``magnet/synth/camelyon16`` (CC0, see SOURCE.md).

    A URI's ``texture_dir=PATH`` replaces this folder with a user's own (same layout: ``labels.csv``).
    """
    return Path(__file__).resolve().parent / "camelyon16"


@dataclass(frozen=True)
class SynthSpec:
    """Everything that defines one virtual slide."""

    seed: int
    size: tuple[int, int] = DEFAULT_SIZE
    lesion: str = "negative"
    mpp: float = DEFAULT_MPP
    texture: str = "procedural"
    texture_dir: str | None = None
    version: int = 1
    centre: str = DEFAULT_CENTRE

    @property
    def uri(self) -> str:
        parts = [f"seed={self.seed}", f"size={self.size[0]}x{self.size[1]}", f"lesion={self.lesion}"]
        if self.mpp != DEFAULT_MPP:
            parts.append(f"mpp={self.mpp:g}")
        if self.texture != "procedural":
            parts.append(f"texture={self.texture}")
        if self.texture_dir is not None:
            parts.append(f"texture_dir={self.texture_dir}")
        if self.version != 1:
            parts.append(f"version={self.version}")
        if self.centre != DEFAULT_CENTRE:
            parts.append(f"centre={self.centre}")
        return f"{SCHEME}:" + ",".join(parts)

    @property
    def resolved_texture_dir(self) -> Path:
        return Path(self.texture_dir) if self.texture_dir is not None else default_texture_dir()


def lesion_for_seed(seed: int) -> str:
    """The class a URI without ``lesion=`` gets: drawn from the seed with the Camelyon17 mix."""
    u = np.random.default_rng([seed, 0x1E5]).random()
    cumulative = 0.0
    for name, share in CLASS_MIX.items():
        cumulative += share
        if u < cumulative:
            return name
    return "negative"


def parse_size(text: str) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` in pixels (``100000x100000``) as ``(width, height)``; None when not of that form."""
    match = _SIZE.fullmatch(text)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def parse_uri(uri: str) -> SynthSpec:
    """Parse a ``synth:`` URI strictly; every mistake is a one-line ``SlideError``."""
    text = str(uri)
    body = text.partition(":")[2]
    if uri_scheme(text) != SCHEME:
        raise SlideError(text, f"not a virtual slide URI (expected '{SCHEME}:key=value,...')")
    if not body:
        raise SlideError(text, "empty virtual slide URI (needs at least seed=N)")
    values: dict[str, str] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if eq != "=" or not key or not value:
            raise SlideError(text, f"malformed item {item!r} (expected key=value)")
        if key not in _KEYS:
            raise SlideError(text, f"unknown key {key!r} (known: {', '.join(_KEYS)})")
        if key in values:
            raise SlideError(text, f"key {key!r} given twice")
        values[key] = value
    if "seed" not in values:
        raise SlideError(text, "missing key 'seed'")
    seed = _parse_int(text, "seed", values["seed"])
    if not 0 <= seed < 2**63:
        raise SlideError(text, f"seed must be in 0..2^63-1, got {seed}")
    size = DEFAULT_SIZE
    if "size" in values:
        parsed = parse_size(values["size"])
        if parsed is None:
            raise SlideError(text, f"size must be WIDTHxHEIGHT in pixels, got {values['size']!r}")
        size = parsed
        if not all(MIN_SIDE <= s <= MAX_SIDE for s in size):
            raise SlideError(text, f"size sides must be in {MIN_SIDE}..{MAX_SIDE} px, got {values['size']}")
    lesion = values.get("lesion") or lesion_for_seed(seed)
    if lesion not in LESION_CLASSES:
        raise SlideError(text, f"lesion must be one of {', '.join(LESION_CLASSES)}, got {lesion!r}")
    mpp = DEFAULT_MPP
    if "mpp" in values:
        try:
            mpp = float(values["mpp"])
        except ValueError:
            raise SlideError(text, f"mpp must be a number, got {values['mpp']!r}") from None
        # 0.1..4 um/px spans 100x down to 2.5x scans; outside that the cell textures make no sense.
        if not (math.isfinite(mpp) and 0.1 <= mpp <= 4.0):
            raise SlideError(text, f"mpp must be in 0.1..4 um/px, got {values['mpp']}")
    texture = values.get("texture", "procedural")
    if texture not in TEXTURES:
        raise SlideError(text, f"texture must be one of {', '.join(TEXTURES)}, got {texture!r}")
    texture_dir = values.get("texture_dir")
    if texture_dir is not None and texture != "camelyon16":
        raise SlideError(text, "texture_dir is only meaningful with texture=camelyon16")
    version = 1
    if "version" in values:
        if values["version"] not in {str(v) for v in VERSIONS}:
            raise SlideError(
                text, f"version must be one of {', '.join(map(str, VERSIONS))}, got {values['version']!r}"
            )
        version = int(values["version"])
    centre = values.get("centre", DEFAULT_CENTRE)
    if centre not in CENTRES:
        raise SlideError(text, f"centre must be one of {', '.join(CENTRES)}, got {centre!r}")
    return SynthSpec(seed, size, lesion, mpp, texture, texture_dir, version, centre)


def canonical_uri(uri: str) -> str:
    """The canonical spelling of a ``synth:`` URI (``SynthSpec.uri``): one slide, one string."""
    return parse_uri(uri).uri


def _parse_int(uri: str, key: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]+", value):
        raise SlideError(uri, f"{key} must be a non-negative integer, got {value!r}")
    return int(value)
