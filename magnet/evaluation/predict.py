"""``magnet predict``: probability and the ROIs of every layer for any slide ``open_slide`` reads.

The model is rebuilt from the checkpoint alone. Output per slide: ``slide``, ``probability``, ``seconds``
(wall time of that slide's forward pass, reads included) and ``layers`` (per magnifying layer, the level-0
boxes ``[x0, y0, x1, y1]`` of its ROIs), plus ``running_probabilities`` (after each final patch, paper
Figure 5), ``error`` (empty unless the slide failed) and ``unreadable`` (true when the slide could not be
read, false when the model failed on it). ``on_batch`` receives each batch's results as they
come (the command line rewrites its output file after every batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from magnet.errors import ConfigError
from magnet.inference.runner import SlidePrediction, predict_slides
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import load_model


def predict(checkpoint: str | Path, slides: Sequence[str], *, batch_size: int = 1,
            on_batch: Callable[[list[dict[str, Any]]], object] | None = None) -> list[dict[str, Any]]:
    model, config = load_model(checkpoint)
    if model.needs_final_rois:
        raise ConfigError(
            f"{checkpoint}: an oracle-zoom checkpoint (model.zoom=oracle) places its final patches on known "
            "lesion outlines, which magnet predict does not have; use magnet evaluate with a manifest whose "
            "'lesions' column names them"
        )
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=config.data.reader_threads)
    def hand_over(batch: list[SlidePrediction]) -> None:
        if on_batch is not None:
            on_batch([asdict(p) for p in batch])

    try:
        preds = predict_slides(model, list(slides), pool, batch_size=batch_size, on_batch=hand_over)
    finally:
        pool.close()
    return [asdict(p) for p in preds]
