"""Explain a MagNet's decision on a slide: run it once, then write figures, GeoJSON and an HTML report.

Per slide, in its own folder ``DIR/<safe slide name>/`` (``safe_slide_name``):

- ``rois.png``: the thumbnail with every layer's ROI boxes, the final ones numbered, and under it the slide's
  name, a scale bar and the legend (``figures.draw_rois``);
- ``patches.png``: the final patches in depth-first order with the running probability (paper Figure 5,
  ``figures.draw_patch_strip``);
- ``rois.geojson``: every ROI as a polygon in level-0 pixels, for QuPath (``geojson``);
- ``report.html``: the probability and what it is, both figures, the legend and a table of the ROIs
  (``report``).

``DIR/index.html`` lists the slides with their probabilities (and errors). The model runs as at inference
(``magnet.inference.runner``): eval mode (plain bilinear sampler, docs/method.md §3.4), identity root view (no
augmentation), no gradient; so the boxes and probability are those ``magnet predict`` reports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from magnet.errors import ConfigError, MagnetError
from magnet.explain.figures import draw_patch_strip, draw_rois
from magnet.explain.geojson import write_geojson
from magnet.explain.legend import layer_keys
from magnet.explain.report import write_index, write_slide_report
from magnet.explain.result import OUTPUT_FILES, THUMBNAIL_SIZE, ExplainResult
from magnet.inference.draws import inference_generator
from magnet.models.magnet import MagNet
from magnet.outputs import output_folder
from magnet.slides.names import safe_slide_name
from magnet.slides.pool import SlidePool
from magnet.slides.reader import RegionReader

__all__ = ["ExplainResult", "explain_slide", "explain_slides", "safe_slide_name", "OUTPUT_FILES"]

def explain_slide(
    model: MagNet,
    reader: RegionReader,
    slide_spec: str,
    out_dir: str | os.PathLike[str],
    *,
    thumbnail_size: int = THUMBNAIL_SIZE,
    checkpoint: str = "",
    seed: int = 0,
) -> ExplainResult:
    """Run ``model`` on one slide and write its explanation into ``out_dir`` (the slide's own folder).

    A slide that cannot be read raises ``SlideError`` (one line); nothing is written then. ``seed``: the
    run's seed, for a model that draws at inference (a random zoom's boxes are then those it was evaluated
    with, ``magnet.inference.draws``).
    """
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model([reader], generator=inference_generator(model, [slide_spec], seed), auxiliary=False)
    finally:
        model.train(was_training)
    probability = float(torch.sigmoid(out.logit.float())[0])
    running = torch.sigmoid(out.running_logits.float())[0].cpu().tolist()
    boxes = [layer_boxes[0].cpu().double().tolist() for layer_boxes in out.boxes_level0]
    thumbnail = reader.slide.thumbnail(thumbnail_size)

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    result = ExplainResult(
        slide=slide_spec,
        name=folder.name,
        out_dir=folder,
        probability=probability,
        running_probabilities=running,
        slide_size=tuple(reader.slide_size),  # type: ignore[arg-type]
        mpp=reader.slide.mpp,
        patches_per_layer=tuple(model.config.patches_per_layer),
        boxes=boxes,
        final_patch_pixels=int(out.patches[-1].shape[-1]),
        files={role: folder / name for role, name in OUTPUT_FILES.items()},
        checkpoint=checkpoint,
    )
    keys = layer_keys(boxes, result.mpp, result.final_patch_pixels)
    draw_rois(result.files["rois_png"], thumbnail, result.slide_size, boxes, mpp=result.mpp,
              final_patch_pixels=result.final_patch_pixels, slide_name=result.display_name)
    draw_patch_strip(result.files["patches_png"], out.patches[-1][0], running, layer=len(boxes),
                     key=keys[-1] if keys else None, slide_name=result.display_name)
    write_geojson(result.files["geojson"], boxes, running)
    result.seconds = time.perf_counter() - t0
    write_slide_report(result.files["report"], result)
    return result


def explain_slides(
    model: MagNet,
    slides: Sequence[str],
    pool: SlidePool,
    out_dir: str | os.PathLike[str],
    *,
    thumbnail_size: int = THUMBNAIL_SIZE,
    checkpoint: str = "",
    progress: Callable[[ExplainResult], object] | None = None,
    seed: int = 0,
) -> list[ExplainResult]:
    """Explain every slide into ``out_dir/<name>/`` and write ``out_dir/index.html``; order is kept.

    A slide that cannot be opened or read is reported in its ``ExplainResult.error`` (and in the index) and
    the others are still explained. ``progress(result)`` is called after each slide. The output folder is
    checked before the first slide, and the index is rewritten after every slide, so an interrupted run
    keeps an index of what it finished. ``seed`` as in ``explain_slide``.
    """
    if model.needs_final_rois:
        raise ConfigError(
            f"{checkpoint or 'model'}: an oracle-zoom checkpoint (model.zoom=oracle) places its final "
            "patches on known lesion outlines; there is no learned zoom to explain (use magnet evaluate)"
        )
    root = output_folder(out_dir)
    taken: set[str] = {"index.html"}
    results: list[ExplainResult] = []
    for spec in slides:
        name = _unique(safe_slide_name(spec), taken)
        try:
            reader = pool.get(spec)
            result = explain_slide(model, reader, spec, root / name, thumbnail_size=thumbnail_size,
                                   checkpoint=checkpoint, seed=seed)
        except MagnetError as exc:
            result = ExplainResult(slide=spec, name=name, checkpoint=checkpoint, error=str(exc))
        results.append(result)
        write_index(root / "index.html", results)
        if progress is not None:
            progress(result)
    return results


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... if taken (compared case-insensitively: macOS, Windows)."""
    candidate, k = name, 1
    while candidate.lower() in taken:
        k += 1
        candidate = f"{name}-{k}"
    taken.add(candidate.lower())
    return candidate
