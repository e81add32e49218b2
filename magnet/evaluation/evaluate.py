"""``magnet evaluate``: AUROC per metastasis class in the layout of the paper's Table 1.

Each column is the AUROC of all negative slides against the positives of one class (Macro, Micro, ITC,
Macro & Micro, All), with a 95 % stratified bootstrap interval (``magnet.metrics.table1``). Writes, in the
output folder: ``metrics.json`` (keys ``macro``, ``micro``, ``itc``, ``macro_micro``, ``all``, ``n_slides``),
``predictions.csv`` (slide, probability, label, class, error), ``roc.png``. Slides that fail to read are
listed in the predictions with their error and left out of the metrics (their count is ``n_failed``; the
command line says so and exits 1 unless told ``--allow-failures``). When the manifest names each slide's
centre (a ``centre`` column), ``metrics.json`` also has ``by_centre``: the same columns per centre.

The output folder is created (or refused) before any slide is read, and ``predictions.csv`` is rewritten
atomically after every batch, so an interruption or a failure late in the run keeps the slides done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from magnet.data.lesions import POSITIVE_CLASSES, slide_class
from magnet.data.manifest import ManifestRow, read_manifest
from magnet.errors import MagnetError
from magnet.evaluation.reports import save_roc_png, write_metrics_json, write_predictions_csv
from magnet.geometry import box_sides, canvas_side
from magnet.inference.fast_model import inference_copy
from magnet.inference.oracle import OracleZoom
from magnet.inference.runner import SlidePrediction, predict_slides
from magnet.metrics.auroc import table1, table1_by_group
from magnet.metrics.localisation import (
    FINE_UM_PER_PX,
    localisation_summary,
    manifest_outlines,
    slide_localisation,
)
from magnet.models.model_config import MagNetConfig
from magnet.models.recentre import final_detail_px
from magnet.outputs import output_folder
from magnet.slides.colour import normaliser
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import load_model


def _localisation(good: list[tuple[ManifestRow, SlidePrediction]],
                  outlines: dict[str, list[Any]] | None, model: MagNetConfig) -> dict[str, Any] | None:
    """Hit rate, lesion share, patch size of the final patches (docs/method.md §5), where outlines are known.

    With the slides' pixel size known, also the hit rate at cellular resolution (a final patch whose pixels
    hold slide detail of <= ``FINE_UM_PER_PX`` each), ``final_um_per_px``, the final patches' mean microns
    per output pixel (box side over ``final_size``), and ``final_detail_um_per_px``, the mean microns of
    slide per pixel of detail: a patch the sampler draws from its parent's read holds no finer detail than
    that read (``magnet.models.recentre.final_detail_px``), so it can be coarser than its output pixels.

    The manifest names its outlines file in a ``lesions`` column (``magnet synth dataset`` writes
    ``lesions.json``, ``magnet.metrics.localisation.manifest_outlines`` reads it); without it there is
    nothing to localise against and the result is None.
    """
    if outlines is None:
        return None
    details = [final_detail_px(model, p.layers, canvas_side(p.slide_size)) for _, p in good]
    per_slide = [
        slide_localisation(p.layers[-1], p.slide_size, outlines.get(r.slide, []),
                           fine_side=None if p.mpp is None else FINE_UM_PER_PX * detail / p.mpp)
        for (r, p), detail in zip(good, details, strict=True)
    ]
    summary = localisation_summary(per_slide, _classes(good))
    output_um: list[float] = []
    detail_um: list[float] = []
    for local, (_, p), detail in zip(per_slide, good, details, strict=True):
        if p.mpp:
            output_um.append(local.mean_patch_side * p.mpp / model.final_size)
            detail_um.append(float(np.mean(box_sides(p.layers[-1]) / detail)) * p.mpp)
    summary["final_um_per_px"] = sum(output_um) / len(output_um) if output_um else None
    summary["final_detail_um_per_px"] = sum(detail_um) / len(detail_um) if detail_um else None
    return summary


def _classes(good: list[tuple[ManifestRow, SlidePrediction]]) -> list[str]:
    """Lesion class per slide; a row without one is "negative" or "positive" (unknown class) by its label."""
    return [slide_class(r.lesion_class, r.label) for r, _ in good]


def format_localisation(loc: dict[str, Any] | None) -> str:
    """Hit rates per class (coarse, and at cellular resolution when known) and the final patches' size (empty
    without lesion outlines)."""
    if not loc:
        return ""
    lines = [f"hit rate (a final patch of side <= 1/8 slide on a lesion): {_per_class(loc, 'hit_rate')}"]
    if any(loc.get(f"hit_rate_fine_{c}") is not None for c in (*POSITIVE_CLASSES, "all")):
        lines.append(f"hit rate at cellular resolution (a final patch with detail <= {FINE_UM_PER_PX:g} "
                     f"um/px on a lesion): {_per_class(loc, 'hit_rate_fine')}")
    resolution, detail = loc.get("final_um_per_px"), loc.get("final_detail_um_per_px")
    coarser = f"; detail {detail:.1f} um/px, drawn from a coarser read" if detail and resolution and (
        detail > resolution * 1.01) else ""
    lines.append(f"final patches: mean side {loc['mean_patch_side_fraction']:.3f} of the slide"
                 + (f" ({resolution:.1f} um/px{coarser})" if resolution else "")
                 + f", lesion share of their area (all positives) {loc.get('lesion_share_all') or 0:.3f}")
    return "\n".join(lines)


def _per_class(loc: dict[str, Any], key: str) -> str:
    return "  ".join(
        f"{c} {loc[f'{key}_{c}']:.2f} (n={loc[f'n_{c}']})" if loc.get(f"{key}_{c}") is not None else f"{c} –"
        for c in (*POSITIVE_CLASSES, "all")
    )


def _prediction_row(row: ManifestRow, pred: SlidePrediction) -> dict[str, Any]:
    """One line of ``predictions.csv``."""
    return {"slide": row.slide, "probability": pred.probability, "label": row.label,
            "class": row.lesion_class, "error": pred.error}


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    predictions: list[SlidePrediction]
    out_dir: Path


def evaluate(checkpoint: str | Path, manifest: str | Path, out_dir: str | Path, *, split: str = "",
             batch_size: int = 4, n_bootstrap: int = 1000, show_progress: bool = True,
             stain_norm: str | None = None) -> Evaluation:
    """Evaluate ``checkpoint`` on the rows of ``manifest`` (only ``split`` when given).

    ``stain_norm`` (``none``, ``reinhard``) replaces the checkpoint's ``data.stain_norm``: e.g. a model
    trained at one centre evaluated on another's slides normalised towards the reference colours.
    """
    model, config = load_model(checkpoint)
    model = inference_copy(model)  # same predictions, faster (magnet.inference.fast_model)
    norm = config.data.stain_norm if stain_norm is None else stain_norm
    rows = list(read_manifest(manifest, check_slides=False).rows)
    if split:
        rows = [r for r in rows if r.split == split]
    if not rows:
        raise MagnetError(f"{manifest}: no rows to evaluate{f' in split {split!r}' if split else ''}")
    outlines = manifest_outlines(rows, Path(manifest).parent)
    oracle = None
    if model.needs_final_rois:  # the oracle control (docs/method.md §8): final patches on the outlines
        oracle = OracleZoom.for_manifest(config.model, rows, Path(manifest).parent, str(manifest), outlines)
    out = output_folder(out_dir)
    by_slide = {r.slide: r for r in rows}
    done: list[SlidePrediction] = []

    def stream(batch: list[SlidePrediction]) -> None:
        done.extend(batch)
        write_predictions_csv([_prediction_row(by_slide[p.slide], p) for p in done], out / "predictions.csv")

    pool = SlidePool(grey_filter=config.data.grey_filter, threads=config.data.reader_threads,
                     wrap=normaliser(norm))
    try:
        with tqdm(total=len(rows), desc="evaluate", unit="slide", disable=not show_progress) as bar:
            preds = predict_slides(model, [r.slide for r in rows], pool, batch_size=batch_size,
                                   progress=bar.update, oracle=oracle, on_batch=stream, seed=config.seed)
    finally:
        pool.close()
    good = [(r, p) for r, p in zip(rows, preds, strict=True) if not p.error]
    if not good:
        raise MagnetError(f"{manifest}: no slide could be read (first error: {preds[0].error}; all listed in "
                          f"{out / 'predictions.csv'})")
    result = table1([r.label for r, _ in good], [p.probability for _, p in good], _classes(good),
                    n_bootstrap=n_bootstrap)
    centres = [r.centre for r, _ in good]
    if any(centres):  # the manifest names centres: the same columns per centre (docs/method.md §10)
        result["by_centre"] = table1_by_group(centres, [r.label for r, _ in good],
                                              [p.probability for _, p in good], _classes(good),
                                              n_bootstrap=n_bootstrap)
    result["n_failed"] = len(rows) - len(good)
    result["localisation"] = _localisation(good, outlines, config.model)
    result["checkpoint"] = str(checkpoint)
    write_predictions_csv([_prediction_row(r, p) for r, p in zip(rows, preds, strict=True)],
                          out / "predictions.csv")
    write_metrics_json(result, out / "metrics.json")
    save_roc_png([r.label for r, _ in good], [p.probability for _, p in good], out / "roc.png",
                 lesion_classes=[r.lesion_class for r, _ in good])
    return Evaluation(result, preds, out)


def failure_summary(evaluation: Evaluation) -> str:
    """One line on the slides that could not be read ("" when none): how many, the first, where all are."""
    failed = [p for p in evaluation.predictions if p.error]
    if not failed:
        return ""
    return (f"{len(failed)} of {len(evaluation.predictions)} slides could not be read and are left out of "
            f"the metrics (first: {failed[0].error}); all are listed in "
            f"{evaluation.out_dir / 'predictions.csv'}")
