"""Colour draws of training slides (magnet.training.colour_augment) and their config keys."""

from __future__ import annotations

import pytest
import torch

from magnet.config_io import load_config
from magnet.errors import ConfigError
from magnet.slides.colour import ColourJitter, JitteredSource
from magnet.training.colour_augment import SlideJitters, draw_jitter
from magnet.training.recipe import ColourAugmentConfig, TrainConfig


def test_zero_strength_draws_the_identity_and_wraps_nothing() -> None:
    cfg = ColourAugmentConfig()
    assert not cfg.enabled and draw_jitter(cfg, torch.Generator().manual_seed(0)).is_identity
    sources = [object(), object()]
    assert SlideJitters(cfg, seed=3).wrap(sources, [0, 1], epoch=0) == sources


def test_draws_stay_in_their_ranges_and_follow_the_seed() -> None:
    cfg = ColourAugmentConfig(hed_scale=0.2, hed_shift=0.05, brightness=0.1, contrast=0.1, saturation=0.15,
                              blur_px=1.0, jpeg_min_quality=60)
    jitters = SlideJitters(cfg, seed=5)
    draws = [jitters.draw(slide, epoch) for slide in range(20) for epoch in range(3)]
    for d in draws:
        assert all(0.8 <= a <= 1.2 for a in d.hed_scale) and all(-0.05 <= b <= 0.05 for b in d.hed_shift)
        assert 0.9 <= d.brightness <= 1.1 and 0.9 <= d.contrast <= 1.1 and 0.85 <= d.saturation <= 1.15
        assert 0.0 <= d.blur_px <= 1.0 and 60 <= d.jpeg_quality <= 100
    assert len(set(draws)) == len(draws)  # other slide or epoch: another draw
    assert [SlideJitters(cfg, seed=5).draw(s, 1) for s in range(5)] == [jitters.draw(s, 1) for s in range(5)]
    assert SlideJitters(cfg, seed=6).draw(0, 0) != jitters.draw(0, 0)
    wrapped = jitters.wrap(["a", "b"], [4, 9], epoch=2)
    assert all(isinstance(w, JitteredSource) for w in wrapped)
    assert [w.jitter for w in wrapped] == [jitters.draw(4, 2), jitters.draw(9, 2)]
    assert isinstance(wrapped[0].jitter, ColourJitter)


def test_config_keys_are_checked_in_one_line() -> None:
    cfg = load_config(TrainConfig, None, ["data.colour.hed_scale=0.1", "data.stain_norm=reinhard"])
    assert cfg.data.colour.hed_scale == 0.1 and cfg.data.colour.enabled and cfg.data.stain_norm == "reinhard"
    with pytest.raises(ConfigError, match=r"data.colour.hed_scale=1.5: must be a finite number in \[0, 1\]"):
        load_config(TrainConfig, None, ["data.colour.hed_scale=1.5"])
    with pytest.raises(ConfigError, match="'data.stain_norm' must be one of 'none', 'reinhard'"):
        load_config(TrainConfig, None, ["data.stain_norm=macenko"])
