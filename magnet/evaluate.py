"""``magnet evaluate``: AUROC per metastasis class in the layout of the paper's Table 1.

Each column is the AUROC of all negative slides against the positives of one class (Macro, Micro, ITC,
Macro & Micro, All), with a 95 % stratified bootstrap interval (``magnet.metrics.table1``). Writes, in the
output folder: ``metrics.json`` (keys ``macro``, ``micro``, ``itc``, ``macro_micro``, ``all``, ``n_slides``),
``predictions.csv`` (slide, probability, label, class), ``roc.png``. Slides that fail to read are listed
in the predictions with their error and left out of the metrics (their count is reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from magnet.checkpoint import load_model
from magnet.data.manifest import read_manifest
from magnet.errors import MagnetError
from magnet.inference import SlidePrediction, predict_slides
from magnet.metrics import save_roc_png, table1, write_metrics_json, write_predictions_csv
from magnet.slide_pool import SlidePool


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    predictions: list[SlidePrediction]
    out_dir: Path


def evaluate(checkpoint: str | Path, manifest: str | Path, out_dir: str | Path, *, split: str = "",
             batch_size: int = 4, n_bootstrap: int = 1000, show_progress: bool = True) -> Evaluation:
    """Evaluate ``checkpoint`` on the rows of ``manifest`` (only ``split`` when given)."""
    model, config = load_model(checkpoint)
    rows = list(read_manifest(manifest, check_slides=False).rows)
    if split:
        rows = [r for r in rows if r.split == split]
    if not rows:
        raise MagnetError(f"{manifest}: no rows to evaluate{f' in split {split!r}' if split else ''}")
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=config.data.reader_threads)
    with tqdm(total=len(rows), desc="evaluate", unit="slide", disable=not show_progress) as bar:
        preds = predict_slides(model, [r.slide for r in rows], pool, batch_size=batch_size,
                               progress=bar.update)
    pool.close()
    good = [(r, p) for r, p in zip(rows, preds, strict=True) if not p.error]
    if not good:
        raise MagnetError(f"{manifest}: no slide could be read (first error: {preds[0].error})")
    result = table1([r.label for r, _ in good], [p.probability for _, p in good],
                    [r.lesion_class or ("positive" if r.label else "negative") for r, _ in good],
                    n_bootstrap=n_bootstrap)
    result["n_failed"] = len(rows) - len(good)
    result["checkpoint"] = str(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(result, out / "metrics.json")
    write_predictions_csv(
        [{"slide": r.slide, "probability": p.probability, "label": r.label,
          "class": r.lesion_class, "error": p.error} for r, p in zip(rows, preds, strict=True)],
        out / "predictions.csv",
    )
    save_roc_png([r.label for r, _ in good], [p.probability for _, p in good], out / "roc.png",
                 lesion_classes=[r.lesion_class for r, _ in good])
    return Evaluation(result, preds, out)
