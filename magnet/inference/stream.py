"""Predict a cohort slide by slide as a stream: each prediction is handed out as soon as its batch is done.

``stream_predictions`` feeds the slides through a ``SlideFeeder`` (opened and root views read ahead on
reader threads, ``magnet.inference.prefetch``) into the model ``batch_size`` at a time
(``runner.predict_sources``). A slide that cannot be opened or read is handed out at once as a prediction
with its ``error`` (``unreadable`` true); the others wait for their batch. So the order of the stream is
the order of the slides except that failures may come earlier. ``seconds`` of a prediction is its slide's
opening and root reads plus its share of the batch's forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from magnet.inference.prefetch import Loaded, SlideFeeder
from magnet.inference.runner import SlidePrediction, predict_sources
from magnet.models.magnet import MagNet

__all__ = ["stream_predictions"]


def stream_predictions(model: MagNet, slides: Sequence[str], *, grey_filter: bool = True,
                       reader_threads: int = 1, batch_size: int = 1, workers: int = 2, ahead: int = 2,
                       device: torch.device | str = "cpu",
                       stain_norm: str = "none") -> Iterator[SlidePrediction]:
    """Yield one ``SlidePrediction`` per slide of ``slides`` (see the module doc for the order).

    ``workers`` threads open slides ``ahead`` slides in advance (``ahead=0``: no overlap of reads and
    compute). Closing the generator early (an interruption) closes every slide it opened.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    feeder = SlideFeeder(slides, root_sizes=model.root_view_sizes(), grey_filter=grey_filter,
                         reader_threads=reader_threads, workers=workers, ahead=ahead, stain_norm=stain_norm)
    batch: list[Loaded] = []
    try:
        with feeder:
            for loaded in feeder:
                if loaded.source is None:
                    yield SlidePrediction(slide=loaded.slide, error=loaded.error, unreadable=True,
                                          seconds=loaded.seconds)
                    continue
                batch.append(loaded)
                if len(batch) == batch_size:
                    yield from _run(model, batch, device)
            if batch:
                yield from _run(model, batch, device)
    finally:
        for loaded in batch:
            if loaded.source is not None:
                loaded.source.close()


def _run(model: MagNet, batch: list[Loaded], device: torch.device | str) -> list[SlidePrediction]:
    """Predict ``batch`` and close its slides; the list is emptied (its slides are no longer held)."""
    try:
        preds = predict_sources(model, [b.slide for b in batch], [b.source for b in batch],  # type: ignore[misc]
                                device=device)
    finally:
        for loaded in batch:
            assert loaded.source is not None
            loaded.source.close()
    for pred, loaded in zip(preds, batch, strict=True):
        pred.seconds += loaded.seconds
    batch.clear()
    return preds
