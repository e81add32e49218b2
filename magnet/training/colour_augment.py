"""Stain and colour augmentation of training reads: one draw per slide and epoch (docs/method.md §10).

``draw_jitter`` turns ``data.colour`` (``ColourAugmentConfig``) and a generator into one ``ColourJitter``;
``SlideJitters`` keys the generator by ``(seed, epoch, slide)`` through the training schedule
(``epoch_generator``), so a slide gets the same draw in every batch it could land in, a run is reproducible
from its seed, and a resumed run repeats the draws of one that never stopped. The draw wraps the slide's
region source (``magnet.slides.colour.JitteredSource``): the model is unchanged and every read of the slide
in a step (root, every layer, final patches) gets the same colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from magnet.slides.colour import ColourJitter, JitteredSource
from magnet.training.recipe import ColourAugmentConfig
from magnet.training.schedule import epoch_generator

__all__ = ["SlideJitters", "draw_jitter"]

# Generator salt of the colour draws: far from the per-step salts of the sampler noise (step + 1).
_SALT = 1 << 40


def _uniform(g: torch.Generator, low: float, high: float, n: int = 1) -> list[float]:
    return (low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)).tolist()


def draw_jitter(cfg: ColourAugmentConfig, g: torch.Generator) -> ColourJitter:
    """One slide's draw; every draw is made, used or not, so one key's value never shifts another's."""
    scale = _uniform(g, 1 - cfg.hed_scale, 1 + cfg.hed_scale, 3)
    shift = _uniform(g, -cfg.hed_shift, cfg.hed_shift, 3)
    brightness, contrast, saturation = (_uniform(g, 1 - x, 1 + x)[0]
                                        for x in (cfg.brightness, cfg.contrast, cfg.saturation))
    blur = _uniform(g, 0.0, cfg.blur_px)[0]
    quality = 0 if cfg.jpeg_min_quality == 0 else int(round(_uniform(g, cfg.jpeg_min_quality, 100)[0]))
    return ColourJitter(tuple(scale), tuple(shift), brightness, contrast, saturation,  # type: ignore[arg-type]
                        blur, quality)


class SlideJitters:
    """The colour draws of one training run: ``wrap(sources, slide_ids, epoch)``."""

    def __init__(self, cfg: ColourAugmentConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed

    def draw(self, slide_id: int, epoch: int) -> ColourJitter:
        return draw_jitter(self.cfg, epoch_generator(self.seed, epoch, salt=_SALT + slide_id))

    def wrap(self, sources: Sequence[Any], slide_ids: Sequence[int], epoch: int) -> list[Any]:
        """Each source wrapped in its slide's draw (unchanged when augmentation is off)."""
        if not self.cfg.enabled:
            return list(sources)
        return [JitteredSource(s, self.draw(i, epoch)) for s, i in zip(sources, slide_ids, strict=True)]
