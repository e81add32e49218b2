"""Baselines of the paper's Table 1 and controls: the mean-RGB control (``mean_rgb``), the thumbnail CNN
(``thumbnail``: the whole slide at one size, no zoom) and tiling + attention MIL (``tiling``, a subpackage
imported on its own: ``magnet.baselines.tiling``)."""

from magnet.baselines.mean_rgb import (
    MeanRGBModel,
    feature_matrix,
    fit_mean_rgb,
    mean_rgb_features,
    run_mean_rgb,
    score_mean_rgb,
)
from magnet.baselines.thumbnail import (
    SlideViews,
    ThumbnailConfig,
    ThumbnailNet,
    ThumbnailResult,
    read_views,
    run_thumbnail,
    train_thumbnail,
    views_by_slide,
)

__all__ = [
    "MeanRGBModel",
    "SlideViews",
    "ThumbnailConfig",
    "ThumbnailNet",
    "ThumbnailResult",
    "feature_matrix",
    "fit_mean_rgb",
    "mean_rgb_features",
    "read_views",
    "run_mean_rgb",
    "run_thumbnail",
    "score_mean_rgb",
    "train_thumbnail",
    "views_by_slide",
]
