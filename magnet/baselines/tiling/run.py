"""The tiling baseline from manifest rows to scores: features per slide, MIL fit, test scores, localisation.

Train on the ``train`` split, select the epoch on ``validation``, score the ``test`` split with ``table1``
(Macro, Micro, ITC, Macro & Micro, All, 95 % bootstrap intervals) exactly as ``magnet evaluate`` does.
The baseline's "where" is its ``top_k`` most-attended tiles per slide: their level-0 boxes go through
``slide_localisation``, the function that scores MagNet's final patches, so the hit rates compare directly
(a tile read at <= 2 um/px counts for the hit at cellular resolution, as a MagNet patch does).

A slide that fails (to open, to read, no pixel size, no tissue tile) is logged once, left out, and listed
with its reason; it never stops the run. Writing the outputs is ``magnet.evaluation.tiling``'s job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from magnet.baselines.tiling.config import TilingConfig
from magnet.baselines.tiling.encoder import build_encoder
from magnet.baselines.tiling.features import SlideFeatures, cache_path, slide_features
from magnet.baselines.tiling.train import TrainedMIL, fit_mil, score_bags
from magnet.data.lesions import slide_class
from magnet.data.manifest import ManifestRow
from magnet.errors import MagnetError, NonFiniteError
from magnet.metrics.auroc import table1
from magnet.metrics.localisation import FINE_UM_PER_PX, localisation_summary, slide_localisation

__all__ = ["SlideScore", "TilingResult", "load_all_features", "run_tiling"]

log = logging.getLogger(__name__)


@dataclass
class SlideScore:
    """One test slide: its probability and most-attended tiles, or why it has none."""

    row: ManifestRow
    probability: float | None = None
    error: str | None = None
    n_tiles: int = 0
    top_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  #: level-0 (x0, y0, x1, y1)
    top_attention: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class TilingResult:
    metrics: dict[str, Any]  #: ``table1``'s dict, plus ``n_failed`` and ``localisation``
    scores: list[SlideScore]  #: every test row, in manifest order
    trained: TrainedMIL
    skipped: list[tuple[str, str]]  #: (slide, reason) of every slide left out, any split
    computed: list[SlideFeatures]  #: features computed in this run (not read from the cache)
    cache_bytes: int  #: disk of the feature files of every slide used


def load_all_features(
    specs: Sequence[str], config: TilingConfig, cache_dir: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, SlideFeatures], list[tuple[str, str]]]:
    """Features of every slide that can be read, and ``(slide, reason)`` of those that cannot."""
    encoder = build_encoder(config.encoder.name, batch_size=config.encoder.batch_size,
                            device=config.encoder.device)
    found: dict[str, SlideFeatures] = {}
    skipped: list[tuple[str, str]] = []
    for done, spec in enumerate(specs, start=1):
        try:
            found[spec] = slide_features(spec, config.tiles, encoder, cache_dir)
        except NonFiniteError:
            raise  # the encoder's fault, not the slide's
        except Exception as error:  # any failure of one slide: report it once, go on with the others
            reason = f"{type(error).__name__}: {error}"
            log.warning("tiling baseline: slide %s left out (%s)", spec, reason)
            skipped.append((spec, reason))
        if progress is not None:
            progress(done, len(specs))
    return found, skipped


def run_tiling(
    rows: Sequence[ManifestRow],
    config: TilingConfig,
    cache_dir: str | os.PathLike[str],
    *,
    outlines: dict[str, list[np.ndarray]] | None = None,
    on_epoch: Callable[[dict[str, float | None]], None] | None = None,
    on_slide: Callable[[int, int], None] | None = None,
) -> TilingResult:
    """Train, select and score on ``rows``' splits; ``outlines`` (by slide) enable the localisation."""
    groups = {name: [r for r in rows if r.split == name] for name in ("train", "validation", "test")}
    if not groups["train"] or not groups["test"]:
        raise MagnetError(f"tiling baseline: {len(groups['train'])} training and {len(groups['test'])} test "
                          "rows; both must be non-empty")
    specs = list(dict.fromkeys(r.slide for g in groups.values() for r in g))
    found, skipped = load_all_features(specs, config, cache_dir, on_slide)
    train = [r for r in groups["train"] if r.slide in found]
    val = [r for r in groups["validation"] if r.slide in found]
    trained = fit_mil([found[r.slide].features for r in train], [r.label for r in train],
                      [found[r.slide].features for r in val], [r.label for r in val], config.mil,
                      progress=on_epoch)
    scores = _score_test(trained, groups["test"], found, dict(skipped), config.top_k)
    good = [s for s in scores if s.probability is not None]
    if not good:
        raise MagnetError(f"tiling baseline: no test slide could be read (first: {scores[0].error})")
    classes = [slide_class(s.row.lesion_class, s.row.label) for s in good]
    metrics = table1([s.row.label for s in good], [s.probability or 0.0 for s in good], classes,
                     n_bootstrap=config.n_bootstrap)
    metrics["n_failed"] = len(scores) - len(good)
    metrics["localisation"] = _localisation(good, found, outlines, classes)
    cache_bytes = sum(cache_path(cache_dir, spec, config.tiles, config.encoder.name).stat().st_size
                      for spec in found)
    computed = [f for f in found.values() if f.seconds > 0]
    return TilingResult(metrics, scores, trained, skipped, computed, cache_bytes)


def _score_test(trained: TrainedMIL, rows: list[ManifestRow], found: dict[str, SlideFeatures],
                failed: dict[str, str], top_k: int) -> list[SlideScore]:
    scores = []
    for row in rows:
        item = found.get(row.slide)
        if item is None:
            scores.append(SlideScore(row, error=failed.get(row.slide, "no features")))
            continue
        logits, attention = score_bags(trained.model, [item.features])
        top = torch.argsort(attention[0], descending=True)[:top_k]
        scores.append(SlideScore(row, float(1.0 / (1.0 + np.exp(-logits[0]))), None, len(item.features),
                                 item.boxes(top), attention[0][top].numpy().astype(np.float64)))
    return scores


def _localisation(good: list[SlideScore], found: dict[str, SlideFeatures],
                  outlines: dict[str, list[np.ndarray]] | None, classes: list[str]) -> dict[str, Any] | None:
    """Hit rate and lesion share of the top-k tiles, in the form of ``magnet evaluate``'s; None without
    lesion outlines."""
    if outlines is None:
        return None
    per_slide = []
    for score in good:
        item = found[score.row.slide]
        fine_side = FINE_UM_PER_PX * item.tile_px / item.mpp  # a tile read at <= 2 um/px
        per_slide.append(slide_localisation(score.top_boxes, item.slide_size,
                                            outlines.get(score.row.slide, []), fine_side=fine_side))
    summary = localisation_summary(per_slide, classes)
    summary["final_um_per_px"] = float(np.mean([found[s.row.slide].um_per_px for s in good]))
    return summary
