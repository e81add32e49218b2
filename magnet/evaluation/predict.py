"""``magnet predict``: probability and the ROIs of every layer for any slide ``open_slide`` reads.

The model is rebuilt from the checkpoint alone. Output per slide (``SlidePrediction`` as a dict):
``slide``, ``probability``, ``seconds`` (that slide's opening and reads plus its share of the forward pass),
``layers`` (per magnifying layer, the level-0 boxes ``[x0, y0, x1, y1]`` of its ROIs),
``running_probabilities`` (after each final patch, paper Figure 5), ``slide_size``, ``mpp``, ``error``
(empty unless the slide failed) and ``unreadable`` (true when the slide could not be read, false when the
model failed on it).

``predict`` returns the predictions of a list of slides in their order. ``predict_cohort`` runs over a
cohort into an output folder (``magnet.evaluation.cohort_store``): each result is recorded as it comes, a
rerun skips the slides done, and a progress bar shows slides per second and the time left. Both read the
next slides while the model computes (``magnet.inference.prefetch``: ``workers`` reader threads, ``ahead``
slides in advance; ``ahead=0`` reads each slide when the model needs it).

Under several processes (``ranks``, ``magnet.evaluation.ranks``) ``predict_cohort`` shares the slides to
predict among them: rank 0 alone reads the folder and plans the run, every rank takes every
``world_size``-th slide of the plan from its rank on (an even share, however much an earlier run did), and
records its slides in its own table; rank 0 merges the tables at the end. Each slide is predicted by one
rank, and the folder ends as one process would have left it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from magnet.errors import ConfigError
from magnet.evaluation.cohort_store import CohortPlan, CohortStore
from magnet.evaluation.ranks import Ranks
from magnet.inference.fast_model import inference_copy
from magnet.inference.runner import SlidePrediction
from magnet.inference.stream import stream_predictions
from magnet.models.magnet import MagNet
from magnet.slides.noise import terminal_stderr
from magnet.training.checkpoints import load_model
from magnet.training.recipe import TrainConfig

__all__ = ["CohortRun", "load_predictor", "predict", "predict_cohort"]

Prediction = dict[str, Any]
# tqdm's bar with the rate always in slides per second (tqdm's default turns it into seconds per slide
# below 1/s) and the time left.
_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def load_predictor(checkpoint: str | Path, device: torch.device | str = "cpu",
                   precision: str = "fp32") -> tuple[MagNet, TrainConfig]:
    """The checkpoint's model on ``device``, in eval mode and prepared for inference at ``precision``
    (``magnet.inference.fast_model``); an oracle-zoom checkpoint is refused (one line)."""
    model, config = load_model(checkpoint)
    if model.needs_final_rois:
        raise ConfigError(
            f"{checkpoint}: an oracle-zoom checkpoint (model.zoom=oracle) places its final patches on known "
            "lesion outlines, which magnet predict does not have; use magnet evaluate with a manifest whose "
            "'lesions' column names them"
        )
    return inference_copy(model, precision).to(device), config


def _stream(model: MagNet, config: TrainConfig, slides: Sequence[str], *, batch_size: int, workers: int,
            ahead: int, in_flight: int, device: torch.device | str,
            stain_norm: str | None = None) -> Iterator[SlidePrediction]:
    """Predictions of ``slides``; ``stain_norm`` (when given) overrides ``data.stain_norm``."""
    norm = config.data.stain_norm if stain_norm is None else stain_norm
    return stream_predictions(model, slides, grey_filter=config.data.grey_filter,
                              reader_threads=config.data.reader_threads, batch_size=batch_size,
                              workers=workers, ahead=ahead, in_flight=in_flight, device=device,
                              stain_norm=norm, seed=config.seed)


def predict(checkpoint: str | Path, slides: Sequence[str], *, batch_size: int = 1, workers: int = 2,
            ahead: int = 2, in_flight: int = 1, device: torch.device | str = "cpu", precision: str = "fp32",
            on_result: Callable[[Prediction], object] | None = None,
            stain_norm: str | None = None) -> list[Prediction]:
    """Predict ``slides``; the list is in their order. ``on_result`` receives each result as it comes."""
    model, config = load_predictor(checkpoint, device, precision)
    results: dict[str, Prediction] = {}
    for pred in _stream(model, config, slides, batch_size=batch_size, workers=workers, ahead=ahead,
                        in_flight=in_flight, device=device, stain_norm=stain_norm):
        results[pred.slide] = asdict(pred)
        if on_result is not None:
            on_result(results[pred.slide])
    return [results[spec] for spec in slides]


@dataclass
class CohortRun:
    """What a ``predict_cohort`` run did: its plan, this run's results (in the order done), the store.

    Under several ranks every rank holds the whole run's: its plan, and the rows of every rank's results
    (``slide``, ``probability``, ``seconds``, ``error``) in the order of the plan; ``ranks`` says which one
    this is (rank 0 reports).
    """

    store: CohortStore
    plan: CohortPlan
    predictions: list[Prediction] = field(default_factory=list)
    ranks: Ranks = field(default_factory=Ranks)

    @property
    def failed(self) -> list[Prediction]:
        """This run's failures."""
        return [p for p in self.predictions if p["error"]]

    def summary(self) -> str:
        """One line: how many slides were predicted, skipped and failed, and where the table is."""
        processes = self.ranks.world_size
        parts = [f"{len(self.predictions) - len(self.failed)} predicted"
                 + (f" by {processes} processes" if processes > 1 else "")]
        if self.plan.done:
            parts.append(f"{len(self.plan.done)} done before (skipped)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.plan.failed:
            parts.append(f"{len(self.plan.failed)} failed before (not retried without --retry-failed)")
        total = len(self.plan.todo) + len(self.plan.done) + len(self.plan.failed)
        slides = f"{total} slide{'' if total == 1 else 's'}"
        return f"{slides}: {', '.join(parts)}; predictions in {self.store.csv}"


def predict_cohort(checkpoint: str | Path, slides: Sequence[str], out: str | os.PathLike[str], *,
                   retry_failed: bool = False, batch_size: int = 1, workers: int = 2, ahead: int = 2,
                   in_flight: int = 1,
                   device: torch.device | str = "cpu", precision: str = "fp32", show_progress: bool = True,
                   on_result: Callable[[Prediction], object] | None = None,
                   ranks: Ranks | None = None, stain_norm: str | None = None) -> CohortRun:
    """Predict the slides of a cohort into the folder ``out`` (``magnet.evaluation.cohort_store``).

    The folder is checked (created, locked, its earlier results read), then the checkpoint loaded and
    compared with the folder's, before any slide is read. Slides already predicted there are skipped, and
    so are those that failed unless ``retry_failed``. Each result is recorded as it comes, then handed to
    ``on_result``. ``ranks``: the processes of the run (default: this one alone, on ``device``); each
    predicts its share of the slides (see the module doc) on ``ranks.device``, and rank 0's ``slides`` are
    the cohort.
    """
    ranks = ranks if ranks is not None else Ranks(device=torch.device(device))
    device = ranks.device
    store = CohortStore(out, rank=ranks.rank, world_size=ranks.world_size)
    try:
        ranks.from_leader(store.claim)  # rank 0 first: a second run is refused before any rank writes
        ranks.agree(lambda: None if ranks.is_leader else store.claim())
        model, config = ranks.agree(lambda: load_predictor(checkpoint, device, precision))
        plan = ranks.from_leader(lambda: _bind_and_plan(store, checkpoint, list(slides), retry_failed))
        share = plan.todo[ranks.rank::ranks.world_size]
        run = CohortRun(store, plan, ranks=ranks)
        desc = "predict" if ranks.world_size == 1 else f"predict (rank 0 of {ranks.world_size})"
        with tqdm(total=len(share), desc=desc, unit="slide", file=terminal_stderr(),
                  disable=not show_progress or not share or not ranks.is_leader, bar_format=_BAR) as bar:
            for pred in _stream(model, config, share, batch_size=batch_size, workers=workers, ahead=ahead,
                                in_flight=in_flight, device=device, stain_norm=stain_norm):
                result = asdict(pred)
                store.record(result)
                run.predictions.append(result)
                bar.update(1)
                if pred.error:
                    bar.set_postfix(failed=len(run.failed), refresh=False)
                if on_result is not None:
                    on_result(result)
        if ranks.world_size > 1:
            run.predictions = _merge_shares(store, ranks, plan)
        else:
            store.finish()
    finally:
        store.release()
    return run


def _bind_and_plan(store: CohortStore, checkpoint: str | Path, slides: list[str],
                   retry_failed: bool) -> CohortPlan:
    store.bind(checkpoint)
    return store.plan(slides, retry_failed=retry_failed)


def _merge_shares(store: CohortStore, ranks: Ranks, plan: CohortPlan) -> list[Prediction]:
    """Once every rank is done, rank 0 merges their rows into ``predictions.csv``; every rank returns them
    all, in the order of the plan."""
    rows = [row for share in ranks.gather(store.recorded()) for row in share]
    ranks.from_leader(lambda: store.merge(rows, plan.todo))
    place = {spec: i for i, spec in enumerate(plan.todo)}
    return sorted(rows, key=lambda row: place.get(row["slide"], len(place)))
