"""Baselines of the paper's Table 1: the mean-RGB control (``mean_rgb``); tiling + attention MIL later."""

from magnet.baselines.mean_rgb import (
    MeanRGBModel,
    feature_matrix,
    fit_mean_rgb,
    mean_rgb_features,
    run_mean_rgb,
    score_mean_rgb,
)

__all__ = [
    "MeanRGBModel",
    "feature_matrix",
    "fit_mean_rgb",
    "mean_rgb_features",
    "run_mean_rgb",
    "score_mean_rgb",
]
