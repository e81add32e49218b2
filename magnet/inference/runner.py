"""Run a MagNet over slides: probabilities and the ROIs of every layer, batch by batch.

Shared by validation during training, ``magnet evaluate`` and ``magnet predict``. Inference uses the plain
bilinear sampler (the model in eval mode, docs/method.md §3.4), the identity root view (no augmentation) and
no gradient. A slide that cannot be opened or read is reported in ``SlidePrediction.error`` and does not
stop the others; so is a non-finite probability or a NaN inside the model (corrupt weights), which no metric
may use. ``on_batch`` hands each batch's predictions over as soon as they exist, so that callers can write
them out as they come and an interruption keeps what was done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from magnet.errors import ConfigError, NonFiniteError, SlideError
from magnet.inference.draws import inference_batch_size, inference_generator
from magnet.inference.oracle import OracleZoom
from magnet.inference.prefetch import PrereadSource
from magnet.models.magnet import MagNet
from magnet.slides.pool import SlidePool
from magnet.slides.reader import RegionReader


@dataclass
class SlidePrediction:
    slide: str
    probability: float = math.nan
    slide_size: tuple[int, int] = (0, 0)  # level-0 (width, height)
    mpp: float | None = None  # microns per level-0 pixel (mean of x and y), None when the slide does not say
    seconds: float = 0.0
    # Per layer, per ROI: level-0 box [x0, y0, x1, y1] (floats, may extend beyond the slide).
    layers: list[list[list[float]]] = field(default_factory=list)
    running_probabilities: list[float] = field(default_factory=list)
    error: str = ""
    unreadable: bool = False  # the error is the slide's (it could not be read), not the model's


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, and put it back in training mode after if it was.

    A model already in eval mode is left alone: ``Module.train`` walks every submodule in Python, and
    calling it per batch held the GIL for a tenth of a small model's prediction (measured with py-spy),
    time that slides predicted on other threads wait for.
    """
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def predict_slides(
    model: MagNet,
    slides: Sequence[str],
    pool: SlidePool,
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: Callable[[int], object] | None = None,
    oracle: OracleZoom | None = None,
    on_batch: Callable[[list[SlidePrediction]], object] | None = None,
    seed: int = 0,
) -> list[SlidePrediction]:
    """Predict every slide of ``slides``; order is kept. ``progress(n)`` is called after each batch, and
    ``on_batch(predictions)`` with that batch's predictions (in the order of ``slides``).

    ``oracle``: the final ROIs of a model with zoom="oracle" (required there; ``magnet.inference.oracle``),
    drawn per slide from a generator seeded by the slide's name, so a slide gets the same patches in any
    batch. ``seed``: the run's seed, for a model that draws at inference (the random-zoom control: one slide
    at a time, each from its own generator, ``magnet.inference.draws``).
    """
    if model.needs_final_rois and oracle is None:
        raise ConfigError(
            "model.zoom=oracle places the final patches on known lesion outlines, and none were given "
            "(evaluate with a manifest whose 'lesions' column names them)"
        )
    batch_size = inference_batch_size(model, batch_size)
    order = {spec: i for i, spec in enumerate(slides)}
    results: list[SlidePrediction] = []
    with evaluation_mode(model):
        for start in range(0, len(slides), batch_size):
            batch = list(slides[start : start + batch_size])
            t0 = time.perf_counter()
            readers, ok, done = [], [], []
            for spec in batch:
                try:
                    readers.append(pool.get(spec))
                    ok.append(spec)
                except SlideError as exc:
                    done.append(SlidePrediction(slide=spec, error=str(exc), unreadable=True))
            if readers:
                done.extend(_predict_batch(model, ok, readers, device, t0, oracle, seed))
            done.sort(key=lambda p: order[p.slide])
            results.extend(done)
            if on_batch is not None:
                on_batch(done)
            if progress is not None:
                progress(len(batch))
    return sorted(results, key=lambda p: order[p.slide])


@torch.no_grad()
def predict_sources(model: MagNet, specs: Sequence[str], sources: Sequence[RegionReader | PrereadSource], *,
                    device: torch.device | str = "cpu", seed: int = 0) -> list[SlidePrediction]:
    """Predict one batch of slides already opened (``sources[i]`` is the slide ``specs[i]``), in eval mode.

    ``seconds`` is each slide's share of the batch's forward pass; the caller adds its opening time. A slide
    that fails inside the forward pass gets its ``error``, as in ``predict_slides`` (``seed`` as there).
    """
    if model.needs_final_rois:
        raise ConfigError("model.zoom=oracle places the final patches on known lesion outlines, and none "
                          "were given (evaluate with a manifest whose 'lesions' column names them)")
    step = inference_batch_size(model, max(1, len(specs)))
    with evaluation_mode(model):
        return [pred for start in range(0, len(specs), step)
                for pred in _predict_batch(model, list(specs[start:start + step]),
                                           list(sources[start:start + step]), device, time.perf_counter(),
                                           None, seed)]


def _predict_batch(model, specs, readers, device, t0, oracle, seed) -> list[SlidePrediction]:  # type: ignore[no-untyped-def]
    try:
        count = model.config.patches_at(model.config.num_layers)
        final = None if oracle is None else oracle.rois(specs, readers, count)
        generator = inference_generator(model, specs, seed)
        # a prediction needs no aux logit
        out = model(readers, generator=generator, final_rois=final, auxiliary=False)
    except NonFiniteError as exc:  # the model's fault: every slide of the batch gets the reason
        reason = f"the model produced non-finite values ({exc}); its weights are likely corrupt"
        return [SlidePrediction(slide=spec, error=reason) for spec in specs]
    except SlideError as exc:
        if len(specs) == 1:
            return [SlidePrediction(slide=specs[0], error=str(exc), unreadable=True)]
        # Find the bad slide(s): predict one by one.
        preds: list[SlidePrediction] = []
        for spec, reader in zip(specs, readers, strict=True):
            preds.extend(_predict_batch(model, [spec], [reader], device, time.perf_counter(), oracle, seed))
        return preds
    seconds = (time.perf_counter() - t0) / len(specs)
    probs = torch.sigmoid(out.logit.float()).cpu()
    running = torch.sigmoid(out.running_logits.float()).cpu()
    preds = []
    for i, spec in enumerate(specs):
        layers = [boxes[i].cpu().tolist() for boxes in out.boxes_level0]
        preds.append(
            SlidePrediction(
                slide=spec,
                probability=float(probs[i]),
                error=_non_finite_reason(float(probs[i])),
                slide_size=tuple(readers[i].slide_size),
                mpp=_mean_mpp(readers[i]),
                seconds=seconds,
                layers=layers,
                running_probabilities=running[i].tolist(),
            )
        )
    return preds


def _mean_mpp(reader: RegionReader | PrereadSource) -> float | None:
    mpp = reader.slide.mpp
    return None if mpp is None else (mpp[0] + mpp[1]) / 2


def _non_finite_reason(probability: float) -> str:
    """The error of a prediction whose probability is not a number ("" when it is fine)."""
    if math.isfinite(probability):
        return ""
    return f"the model gave a non-finite probability ({probability}); its weights are likely corrupt"
