"""Predict a cohort slide by slide as a stream: each prediction is handed out as soon as its batch is done.

``stream_predictions`` feeds the slides through a ``SlideFeeder`` (opened and root views read ahead on
reader threads, ``magnet.inference.prefetch``) into the model ``batch_size`` at a time
(``runner.predict_sources``). A slide that cannot be opened or read is handed out at once as a prediction
with its ``error`` (``unreadable`` true); the others wait for their batch. So the order of the stream is
the order of the slides except that failures may come earlier. ``seconds`` of a prediction is its slide's
opening and root reads plus its share of the batch's forward pass.

``in_flight`` batches are predicted at once, each on its own thread [choice]. Reading ahead covers only a
slide's opening and root views; the reads of the deeper layers wait for the layer before them, so with one
batch in flight the model idles while they decode. With two, one batch's reads overlap the other's compute
(slide decoding and torch both release the GIL). The model is in evaluation mode and computes without
state, so concurrent forward passes give the predictions one at a time would; predictions still come out
in the order of their batches. The slides in flight share the reader threads (``reader_threads //
in_flight`` each, at least one): the slides are then the parallelism, and more threads than cores only fight
for the GIL (2 in flight on 2 cores: 21–23 slides/s with one reader thread each, 18–19 with two). Measured
in docs/BENCHMARKS.md ("Two slides in flight, 200 slides").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from magnet.inference.prefetch import Loaded, SlideFeeder
from magnet.inference.runner import SlidePrediction, evaluation_mode, predict_sources
from magnet.models.magnet import MagNet

__all__ = ["stream_predictions"]


def stream_predictions(model: MagNet, slides: Sequence[str], *, grey_filter: bool = True,
                       reader_threads: int = 1, batch_size: int = 1, workers: int = 2, ahead: int = 2,
                       in_flight: int = 1, device: torch.device | str = "cpu",
                       stain_norm: str = "none", seed: int = 0) -> Iterator[SlidePrediction]:
    """Yield one ``SlidePrediction`` per slide of ``slides`` (see the module doc for the order).

    ``workers`` threads open slides ``ahead`` slides in advance (``ahead=0``: no overlap of reads and
    compute); ``in_flight`` batches are predicted at once, sharing ``reader_threads`` (each slide's
    reads). Closing the generator early (an interruption) waits for the batches in flight and closes every
    slide it opened. ``seed``: the run's seed, for a model that draws at inference
    (``runner.predict_slides``).
    """
    if batch_size < 1 or in_flight < 1:
        raise ValueError(f"batch_size and in_flight must be >= 1, got {batch_size} and {in_flight}")
    feeder = SlideFeeder(slides, root_sizes=model.root_view_sizes(), grey_filter=grey_filter,
                         reader_threads=max(1, reader_threads // in_flight), workers=workers, ahead=ahead,
                         stain_norm=stain_norm)
    # Eval mode once for all threads: a thread switching modes would switch them for the others too.
    with evaluation_mode(model):
        yield from _stream(model, feeder, batch_size, in_flight, device, seed)


def _stream(model: MagNet, feeder: SlideFeeder, batch_size: int, in_flight: int,
            device: torch.device | str, seed: int) -> Iterator[SlidePrediction]:
    batch: list[Loaded] = []
    pending: deque[Future[list[SlidePrediction]]] = deque()
    try:
        with feeder, ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="magnet-model") as pool:
            for loaded in feeder:
                if loaded.source is None:
                    yield SlidePrediction(slide=loaded.slide, error=loaded.error, unreadable=True,
                                          seconds=loaded.seconds)
                    continue
                batch.append(loaded)
                if len(batch) == batch_size:
                    pending.append(pool.submit(_run, model, batch, device, seed))
                    batch = []
                    while len(pending) >= in_flight:  # the oldest first, so the order of batches is kept
                        yield from pending.popleft().result()
            if batch:
                pending.append(pool.submit(_run, model, batch, device, seed))
                batch = []
            while pending:
                yield from pending.popleft().result()
    finally:
        for future in pending:  # an early close: the batches in flight end (their slides closed by _run)
            future.exception()
        for loaded in batch:
            if loaded.source is not None:
                loaded.source.close()


def _run(model: MagNet, batch: list[Loaded], device: torch.device | str, seed: int) -> list[SlidePrediction]:
    """Predict ``batch`` and close its slides."""
    try:
        preds = predict_sources(model, [b.slide for b in batch], [b.source for b in batch],  # type: ignore[misc]
                                device=device, seed=seed)
    finally:
        for loaded in batch:
            assert loaded.source is not None
            loaded.source.close()
    for pred, loaded in zip(preds, batch, strict=True):
        pred.seconds += loaded.seconds
    return preds
