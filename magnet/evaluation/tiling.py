"""Run the tiling baseline on a recipe and write what ``magnet evaluate`` writes, plus the baseline's own.

In the output folder (created, or refused with one line, before any slide is read): ``metrics.json``
(``table1``'s columns, ``n_failed``, ``localisation`` of the top-attended tiles, and the baseline's
selection, history, slides left out and feature-cache disk), ``predictions.csv`` (slide, probability,
label, class, error, tiles), ``roc.png``, ``top_tiles.json`` (per test slide, the ``top_k`` most-attended
tiles' level-0 boxes and weights: the baseline's "where"), ``mil.ckpt`` (the selected MIL head and the
recipe), ``config.yaml`` and ``history.jsonl`` (one line per run). Feature files go to the recipe's
``cache_dir``, else ``OUT/features``. Every file is written atomically. The folder is locked for the run's
life (``magnet.training.run_folder``): a second run into it is refused in one line, and a run that fails
before writing anything removes the folder it created.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from magnet import strict_json
from magnet.atomic import atomic_path, atomic_write_text
from magnet.baselines.tiling.config import TilingConfig
from magnet.baselines.tiling.run import SlideScore, TilingResult, run_tiling
from magnet.config_io import config_to_dict, save_config
from magnet.data.manifest import read_manifest
from magnet.errors import MagnetError
from magnet.evaluation.reports import save_roc_png, write_metrics_json, write_predictions_csv
from magnet.metrics.localisation import manifest_outlines
from magnet.outputs import output_folder
from magnet.training.run_folder import RunFolder

__all__ = ["run_tiling_baseline"]


def _prediction_row(score: SlideScore) -> dict[str, Any]:
    """One line of ``predictions.csv``: ``magnet evaluate``'s columns and the slide's tile count."""
    return {"slide": score.row.slide, "probability": score.probability, "label": score.row.label,
            "class": score.row.lesion_class, "error": score.error, "tiles": score.n_tiles}


def run_tiling_baseline(
    config: TilingConfig,
    out_dir: str | Path,
    *,
    on_epoch: Callable[[dict[str, float | None]], None] | None = None,
    on_slide: Callable[[int, int], None] | None = None,
) -> tuple[TilingResult, Path]:
    """Train and score the baseline of ``config`` on its manifest; write the outputs into ``out_dir``."""
    if not config.manifest:
        raise MagnetError("manifest: the recipe names no manifest CSV (set manifest=PATH)")
    run_folder = RunFolder(out_dir)  # one run per folder; a second is refused in one line
    run_folder.claim()
    try:
        result = _run_and_write(config, run_folder, on_epoch=on_epoch, on_slide=on_slide)
    except BaseException:
        run_folder.release(tidy=True)
        raise
    run_folder.release()
    return result, run_folder.path


def _run_and_write(
    config: TilingConfig,
    run_folder: RunFolder,
    *,
    on_epoch: Callable[[dict[str, float | None]], None] | None,
    on_slide: Callable[[int, int], None] | None,
) -> TilingResult:
    out = run_folder.path
    cache_dir = output_folder(config.cache_dir) if config.cache_dir else output_folder(out / "features")
    rows = list(read_manifest(config.manifest, check_slides=False).rows)
    outlines = manifest_outlines(rows, Path(config.manifest).parent)
    save_config(config, out / "config.yaml")
    run_folder.record("start", manifest=config.manifest)
    result = run_tiling(rows, config, cache_dir, outlines=outlines, on_epoch=on_epoch, on_slide=on_slide)
    good = [s for s in result.scores if s.probability is not None]
    metrics = dict(result.metrics)
    metrics.update({
        "baseline": "tiling", "encoder": config.encoder.name, "best_epoch": result.trained.best_epoch,
        "history": result.trained.history, "skipped": [list(s) for s in result.skipped],
        "feature_cache_bytes": result.cache_bytes, "feature_cache": str(cache_dir),
    })
    write_predictions_csv([_prediction_row(s) for s in result.scores], out / "predictions.csv")
    write_metrics_json(metrics, out / "metrics.json")
    save_roc_png([s.row.label for s in good], [s.probability or 0.0 for s in good], out / "roc.png",
                 lesion_classes=[s.row.lesion_class for s in good], title="ROC (tiling + attention MIL)")
    top = {s.row.slide: {"boxes_level0": s.top_boxes.tolist(), "attention": s.top_attention.tolist()}
           for s in good}
    atomic_write_text(out / "top_tiles.json", strict_json.dumps(top) + "\n")
    with atomic_path(out / "mil.ckpt") as tmp:
        torch.save({"config": config_to_dict(config), "state_dict": result.trained.model.state_dict(),
                    "best_epoch": result.trained.best_epoch}, tmp)
    result.metrics = metrics
    return result
