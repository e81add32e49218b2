"""Do the positive slides whose final boxes touch their lesion score above the negatives?

A tree's AUROC on a class mixes two things: how often its final boxes reach the lesion (the hit rate of
``magnet evaluate``) and how the readout scores a slide whose boxes did reach it. This bench splits the
second out. For each positive test slide of ``--classes`` it runs the tree of ``--checkpoint`` (learned
zoom or the fixed layout; evaluation mode, the zoom as at inference) to get its final boxes, and marks the
slide as hit when a box overlaps a lesion outline (``magnet.metrics.localisation.slide_localisation``).
Then, for each predictions file given (``magnet evaluate``'s columns, from that tree or from a readout
refitted on its patches, e.g. ``bench/cell_readout.py``), it prints the AUROC of the hit slides against
every negative slide and that of the missed ones. A readout that sees the lesion whenever a box touches it
scores the hit slides near 1; one that does not, near 0.5.

    OMP_NUM_THREADS=1 .venv/bin/python bench/hit_scores.py --checkpoint RUN/best-trained.ckpt \\
        --test /tmp/avp4/test/manifest.csv --predictions 2um=RUN/eval/predictions.csv \\
        --predictions 1um=/tmp/cells/NAME-cells.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_readout import load_run  # noqa: E402  (bench modules beside this one)
from paired_auroc import read as read_predictions  # noqa: E402

from magnet.data.manifest import read_manifest  # noqa: E402
from magnet.metrics.auroc import auroc_pos_neg  # noqa: E402
from magnet.metrics.localisation import manifest_outlines, slide_localisation  # noqa: E402
from magnet.slides.pool import SlidePool  # noqa: E402


def tree_boxes(checkpoint: Path, rows: list) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """Slide -> (the tree's final boxes ``(N, 4)`` in level-0 pixels, the slide's level-0 size) for ``rows``:
    evaluation mode, the zoom as at inference, the boxes after any re-centring."""
    model, config = load_run(checkpoint, "patches")  # the boxes do not depend on the readout
    if model.needs_final_rois or model.draws_at_random:
        raise SystemExit(f"{checkpoint}: an oracle's or random zoom's boxes are not its own")
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    found = {}
    with torch.no_grad():
        for row in rows:
            source = pool.get(row.slide)
            boxes = model.final_patches([source]).boxes_level0[-1][0]
            found[row.slide] = (boxes.cpu().numpy().astype(np.float64), tuple(source.slide_size))
    pool.close()
    return found


def hits(checkpoint: Path, manifest: Path, classes: set[str]) -> dict[str, tuple[str, bool]]:
    """Slide -> (class, whether a final box of the tree overlaps its lesion), for the test slides of
    ``classes``."""
    rows = [r for r in read_manifest(manifest, check_slides=False).rows
            if r.split == "test" and (r.lesion_class or "negative") in classes]
    outlines = manifest_outlines(rows, manifest.parent)
    if outlines is None:
        raise SystemExit(f"hit_scores: {manifest} names no lesion outlines")
    boxes = tree_boxes(checkpoint, rows)
    return {row.slide: (row.lesion_class or "negative",
                        slide_localisation(*boxes[row.slide], outlines.get(row.slide, [])).hit)
            for row in rows}


def report(name: str, found: dict[str, tuple[str, bool]], csv_path: str, classes: list[str]) -> None:
    """For each of ``classes``, the AUROC against the negatives of the slides of ``found`` hit and of those
    missed, with the predictions of ``csv_path``."""
    predicted = read_predictions(csv_path)  # slide -> (probability, class), rows without an error
    negatives = np.array([p for p, cls in predicted.values() if cls == "negative"])
    missing = sorted(set(found) - set(predicted))
    if missing:
        raise SystemExit(f"hit_scores: {csv_path}: no prediction for {len(missing)} slides, "
                         f"e.g. {missing[0]}")
    for cls in classes:
        parts = []
        for title, wanted in (("hit", True), ("missed", False)):
            positives = np.array([predicted[s][0] for s, (c, hit) in found.items()
                                  if c == cls and hit == wanted])
            value = auroc_pos_neg(positives, negatives) if len(positives) else float("nan")
            parts.append(f"{title} {len(positives)}: {value:.2f}")
        print(f"{name} {cls}: AUROC against the {len(negatives)} negatives, {', '.join(parts)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the tree whose boxes are judged")
    parser.add_argument("--test", type=Path, required=True, help="manifest with the test split and outlines")
    parser.add_argument("--predictions", action="append", required=True, metavar="NAME=CSV")
    parser.add_argument("--classes", nargs="+", default=["micro", "itc"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = hits(args.checkpoint, args.test, set(args.classes))
    for spec in args.predictions:
        name, csv_path = spec.split("=", 1)
        report(name, found, csv_path, args.classes)


if __name__ == "__main__":
    main()
