"""Random draws at inference that repeat: each slide's own generator.

Most zoom modes draw nothing once a model is in evaluation mode. The random-zoom control (docs/method.md §8)
does: its boxes are drawn at prediction too. Drawn from torch's global generator, a slide's boxes would
depend on what the process did before (training, other slides, the batch it shares) and, in a fresh
process, on torch's random initial seed: the same checkpoint evaluated twice would score differently. So
every forward that may draw gets a generator of its own, seeded by the slide's name and the run's seed
(``TrainConfig.seed``): a slide's random boxes are then the same in validation, ``magnet evaluate``, the
readout refit and ``magnet explain``, in any batch and any process, and another training seed draws other
boxes. A model that draws at inference is run one slide at a time so that each slide's draws are its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

from magnet.models.magnet import MagNet


def slide_generator(name: str, seed: int = 0) -> torch.Generator:
    """A CPU generator seeded by a slide's name and a run's ``seed`` (seed 0: by the name alone)."""
    key = name if seed == 0 else f"{name}\n{seed}"
    return torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))


def inference_batch_size(model: MagNet, batch_size: int) -> int:
    """``batch_size``, or 1 for a model that draws at inference (each slide its own draws)."""
    return 1 if model.draws_at_random else batch_size


def inference_generator(model: MagNet, slides: Sequence[str], seed: int = 0) -> torch.Generator | None:
    """The generator for a forward of ``model`` over ``slides``: none for a model that draws nothing at
    inference; else the one slide's ``slide_generator`` (``ValueError`` for several slides)."""
    if not model.draws_at_random:
        return None
    if len(slides) != 1:
        raise ValueError(f"a model that draws at inference (zoom={model.config.zoom!r}) predicts one slide "
                         f"at a time, each from its own generator; got {len(slides)} slides")
    return slide_generator(slides[0], seed)
