"""Data sets of virtual slides: a manifest CSV and the lesion outlines, no pixels (docs/virtual-slides.md).

Class mix like Camelyon17's public training part (Bandi et al. 2019: 318 of 500 nodes negative, positives
about 40 % macro, 35 % micro, 25 % ITC): 64 % negative, 14.4 % macro, 12.6 % micro, 9 % ITC. Counts per
class are rounded by largest remainder so that they sum to ``n``; splits are stratified by class (each class
split 70/15/15 into train/validation/test, our choice: enough validation positives to select a checkpoint).
Everything is a function of ``seed``: the same arguments give byte-identical files.

``centres`` spreads the slides over named stain-and-scanner profiles (``magnet.synth.centres``) round-robin
by slide index: slide ``i`` gets ``centres[i % len(centres)]``. The centre changes only the look, never the
layout, so ``make_dataset(n, seed, centres=("purple",))`` is ``make_dataset(n, seed)`` seen at another
centre: the same slides and labels (a held-out-centre test set). The manifest then has a ``centre`` column.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from magnet.data.lesions import LESIONS_FILE, LOOKALIKES_FILE, write_lesions
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.errors import ConfigError, SlideError
from magnet.outputs import output_folder
from magnet.synth.centres import CENTRES
from magnet.synth.slide import VirtualSlide
from magnet.synth.uri import (
    CLASS_MIX,
    DEFAULT_MPP,
    DEFAULT_SIZE,
    DEFAULT_VERSION,
    TEXTURES,
    VERSIONS,
    SynthSpec,
)

SPLIT_FRACTIONS = {"train": 0.70, "validation": 0.15, "test": 0.15}
# Slide seeds of data set ``seed`` are seed * SEED_STRIDE + index: readable, and distinct across data sets
# of fewer than a million slides.
SEED_STRIDE = 1_000_000
# On small slides a lesion of the drawn class may not fit the drawn tissue; then the slide takes an
# alternate seed (index + k * n), at most this many tries.
MAX_ALTERNATES = 10


@dataclass(frozen=True)
class DatasetSlide:
    uri: str
    label: int
    lesion_class: str
    split: str
    lesions: list[dict[str, object]]  # {"class", "extent_um", "polygon": [[x, y], ...]} per lesion
    version: int = DEFAULT_VERSION  # generator version
    centre: str | None = None  # stain-and-scanner profile; None: the data set names no centres
    # {"kind", "mimics", "extent_um", "polygon"} per benign look-alike of a lesion (versions 2 and 3)
    lookalikes: list[dict[str, object]] = field(default_factory=list)


def _largest_remainder(n: int, shares: Sequence[float]) -> list[int]:
    raw = np.asarray(shares, float) / float(sum(shares)) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def make_dataset(
    n: int,
    seed: int = 0,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    texture: str = "procedural",
    mpp: float = DEFAULT_MPP,
    texture_dir: str | None = None,
    version: int = DEFAULT_VERSION,
    centres: Sequence[str] | None = None,
) -> list[DatasetSlide]:
    """The slides of a data set of ``n`` virtual slides (geometry only: fast, no pixels rendered)."""
    if n < 1:
        raise ConfigError(f"n: a data set needs at least one slide, got {n}")
    if seed < 0 or seed >= 2**40:
        raise ConfigError(f"seed: must be in 0..2^40-1, got {seed}")
    if n > SEED_STRIDE:
        raise ConfigError(f"n: at most {SEED_STRIDE} slides per data set, got {n}")
    if texture not in TEXTURES:
        raise ConfigError(f"texture: must be one of {', '.join(TEXTURES)}, got {texture!r}")
    if version not in VERSIONS:
        raise ConfigError(f"version: must be one of {', '.join(map(str, VERSIONS))}, got {version!r}")
    if centres is not None:
        if not centres:
            raise ConfigError("centres: give at least one centre name (or none at all)")
        unknown = [c for c in centres if c not in CENTRES]
        if unknown:
            raise ConfigError(f"centres: unknown centre {unknown[0]!r} (known: {', '.join(CENTRES)})")
    rng = np.random.default_rng([seed, 0xDA7A])
    classes = np.repeat(list(CLASS_MIX), _largest_remainder(n, list(CLASS_MIX.values())))
    rng.shuffle(classes)
    splits = np.empty(n, dtype=object)
    for name in CLASS_MIX:
        members = np.flatnonzero(classes == name)
        labels = np.repeat(
            list(SPLIT_FRACTIONS), _largest_remainder(len(members), list(SPLIT_FRACTIONS.values()))
        )
        rng.shuffle(labels)
        splits[members] = labels
    slides = []
    for index in range(n):
        centre = None if centres is None else centres[index % len(centres)]
        slide = _open_fitting(seed, index, n, size, str(classes[index]), mpp, texture, texture_dir, version,
                              centre or "reference")
        outlines = [_outline(lesion.shape.polygon(), lesion.extent_um, **{"class": lesion.lesion_class})
                    for lesion in slide.layout.lesions]
        lookalikes = [_outline(item.polygon, item.extent_um, kind=item.kind, mimics=item.mimics)
                      for item in slide.lookalikes]
        slides.append(
            DatasetSlide(slide.path, slide.label, slide.lesion_class, str(splits[index]), outlines, version,
                         centre, lookalikes)
        )
    return slides


def _outline(polygon: np.ndarray, extent_um: float, **labels: str) -> dict[str, object]:
    """One record of an outline file (lesions.json, lookalikes.json): its labels, then its largest extent
    (um) and polygon (level-0 px), rounded to 0.01."""
    return {**labels, "extent_um": round(extent_um, 2), "polygon": np.round(polygon, 2).tolist()}


def _open_fitting(
    seed: int,
    index: int,
    n: int,
    size: tuple[int, int],
    lesion: str,
    mpp: float,
    texture: str,
    texture_dir: str | None,
    version: int = DEFAULT_VERSION,
    centre: str = "reference",
) -> VirtualSlide:
    """Slide ``index``; on a small slide where a lesion does not fit the tissue, the next alternate seed."""
    error: SlideError | None = None
    for attempt in range(MAX_ALTERNATES):
        slide_seed = seed * SEED_STRIDE + (index + attempt * n) % SEED_STRIDE
        try:
            spec = SynthSpec(slide_seed, size, lesion, mpp, texture, texture_dir, version, centre)
            return VirtualSlide(spec.uri)
        except SlideError as exc:
            error = exc
    assert error is not None
    raise ConfigError(f"--size {size[0]}x{size[1]}: too small for {lesion} slides ({error.reason})")


def with_enriched_test(
    slides: Sequence[DatasetSlide],
    counts: dict[str, int],
    seed: int,
    *,
    pool: int | None = None,
    **options: Any,
) -> list[DatasetSlide]:
    """``slides`` without their test split, plus a class-enriched test set: the first ``counts[c]`` slides of
    each lesion class ``c`` of ``make_dataset(pool, seed, **options)``. ``seed`` must differ from the data
    set's own (its slide seeds then differ too). The class mix alone gives few positives to a small test
    split (about 9 per class in 400 slides); this gives each class enough for its AUROC.

    ``pool``: how many slides to draw from; by default the smallest data set whose class mix holds every
    count, plus a slide per class for rounding. ``options`` are ``make_dataset``'s (size, version, ...):
    give the ones the data set was made with.
    """
    if pool is None:
        pool = max(math.ceil(k / CLASS_MIX[c]) for c, k in counts.items()) + len(CLASS_MIX)
    kept = [s for s in slides if s.split != "test"]
    return kept + take_per_class(make_dataset(pool, seed, **options), counts)


def write_dataset(slides: Sequence[DatasetSlide], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/manifest.csv``, ``out_dir/lesions.json`` and ``out_dir/lookalikes.json`` (outlines by
    slide URI; the manifest's ``lesions`` and ``lookalikes`` columns name them); return the manifest."""
    folder = output_folder(out_dir)
    rows = [
        ManifestRow(
            s.uri,
            s.label,
            s.lesion_class,
            s.split,
            extra={
                "lesions": LESIONS_FILE,
                "lookalikes": LOOKALIKES_FILE,
                "n_lesions": str(len(s.lesions)),
                "largest_extent_um": f"{s.lesions[0]['extent_um']:.2f}" if s.lesions else "",
                "generator_version": str(s.version),
                **({} if s.centre is None else {"centre": s.centre}),
            },
        )
        for s in slides
    ]
    outlines = {s.uri: s.lesions for s in slides}
    write_lesions(outlines, folder / LESIONS_FILE)
    write_lesions({s.uri: s.lookalikes for s in slides}, folder / LOOKALIKES_FILE)
    manifest = folder / "manifest.csv"
    write_manifest(rows, manifest)
    return manifest


def take_per_class(
    slides: Sequence[DatasetSlide], counts: dict[str, int], split: str = "test"
) -> list[DatasetSlide]:
    """The first ``counts[c]`` slides of each lesion class ``c``, in order, all put in ``split``: a
    class-enriched evaluation set with enough positives of every class for per-class AUROCs."""
    left, chosen = dict(counts), []
    for slide in slides:
        if left.get(slide.lesion_class, 0) > 0:
            left[slide.lesion_class] -= 1
            chosen.append(replace(slide, split=split))
    if any(left.values()):
        missing = {c: k for c, k in left.items() if k}
        raise ConfigError(f"not enough slides of some class among {len(slides)}: {missing} missing")
    return chosen
