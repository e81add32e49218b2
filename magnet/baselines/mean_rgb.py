"""The paper's mean-RGB baseline (Table 1, first row: 59 % Macro, 57 % Micro, 58 % Macro & Micro).

A control for colour shortcuts: if a slide's average colour alone separates tumour from normal slides
(scanner, stain batch, hospital), the classifier's AUROC means less. Features are the mean R, G, B of the
slide's thumbnail over tissue pixels only: the paper's grey filter (§4.2, docs/method.md §2.8) marks pixels
with ``max(R,G,B) - min(R,G,B) < 15`` as glass or background, and those are left out of the mean (so the
amount of glass on a slide does not move its colour). A logistic regression on standardised features is
fitted on the training split and scores the test split.

The paper gives no more detail (thumbnail size, regularisation); ours are arguments with reasons below.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from magnet.data.manifest import Manifest, ManifestRow
from magnet.errors import MagnetError
from magnet.slides.base import Slide
from magnet.slides.pixels import GREY_THRESHOLD, grey_mask
from magnet.slides.registry import open_slide

# 256 px on the long side: the slide's colour is a global property; more pixels change the mean by a
# fraction of a grey level and cost reading time.
DEFAULT_THUMB_SIZE = 256


def mean_rgb_features(
    slide: Slide | str | os.PathLike[str], thumb_size: int = DEFAULT_THUMB_SIZE
) -> np.ndarray:
    """Mean RGB (in ``[0, 1]``, shape ``(3,)``) of the slide's non-grey thumbnail pixels.

    A slide with no tissue pixel at all (all glass) gives ``(0, 0, 0)``: the grey filter turns every
    pixel black, and black is what the model would see too.
    """
    if isinstance(slide, Slide):
        return _mean_rgb(slide.thumbnail(thumb_size))

    with open_slide(slide) as opened:
        return _mean_rgb(opened.thumbnail(thumb_size))


def _mean_rgb(rgb: np.ndarray) -> np.ndarray:
    tissue = ~grey_mask(rgb, GREY_THRESHOLD)
    if not tissue.any():
        return np.zeros(3)
    return rgb[tissue].astype(np.float64).mean(axis=0) / 255.0


def feature_matrix(
    slides: Sequence[Slide | str | os.PathLike[str]], thumb_size: int = DEFAULT_THUMB_SIZE
) -> np.ndarray:
    """``(N, 3)`` mean-RGB features of ``slides`` (opened by ``open_slide`` when given as paths/URIs)."""
    if not slides:
        return np.zeros((0, 3))
    return np.stack([mean_rgb_features(s, thumb_size) for s in slides])


@dataclass
class MeanRGBModel:
    """A fitted standardise + logistic-regression pipeline on mean-RGB features."""

    pipeline: object  # sklearn Pipeline; typed loosely to keep sklearn out of the public annotations

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of label 1 per row of ``features`` ``(N, 3)``."""
        proba = self.pipeline.predict_proba(np.asarray(features, dtype=np.float64))  # type: ignore[attr-defined]
        return np.asarray(proba[:, 1])


def fit_mean_rgb(
    features: np.ndarray, labels: Sequence[int] | np.ndarray, *, regularisation_c: float = 1.0
) -> MeanRGBModel:
    """Fit the baseline on ``features`` ``(N, 3)`` and 0/1 ``labels``.

    Features are standardised first: mean RGB values of H&E slides differ by a few hundredths, and an
    L2-penalised regression on the raw values would barely move from the prior. ``regularisation_c=1``
    is sklearn's default; with three features it hardly matters.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) != len(y):
        raise ValueError(f"expected features (N, 3) and N labels, got {x.shape} and {y.shape}")
    if len(np.unique(y)) < 2:
        raise MagnetError("the mean-RGB baseline needs positive and negative training slides")
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=regularisation_c))
    pipeline.fit(x, y)
    return MeanRGBModel(pipeline)


def score_mean_rgb(model: MeanRGBModel, features: np.ndarray) -> np.ndarray:
    """Probability of metastasis for each row of ``features`` ``(N, 3)``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"expected features of shape (N, 3), got {x.shape}")
    return model.predict_proba(x)


def run_mean_rgb(
    manifest: Manifest | Sequence[ManifestRow],
    *,
    fit_splits: Sequence[str] = ("train",),
    score_split: str = "test",
    thumb_size: int = DEFAULT_THUMB_SIZE,
) -> tuple[list[ManifestRow], np.ndarray]:
    """Fit on ``fit_splits`` of a manifest, score ``score_split``: the scored rows and their probabilities
    (ready for ``magnet.metrics.table1``). The paper fits on the training split."""
    rows = list(manifest.rows if isinstance(manifest, Manifest) else manifest)
    fit_rows = [r for r in rows if r.split in fit_splits]
    score_rows = [r for r in rows if r.split == score_split]
    if not fit_rows or not score_rows:
        raise MagnetError(
            f"mean-RGB baseline: {len(fit_rows)} rows in {', '.join(fit_splits)} and "
            f"{len(score_rows)} in {score_split}; both must be non-empty"
        )
    model = fit_mean_rgb(feature_matrix([r.slide for r in fit_rows], thumb_size), [r.label for r in fit_rows])
    return score_rows, score_mean_rgb(model, feature_matrix([r.slide for r in score_rows], thumb_size))
