"""An audit of the virtual slides: does a model score a positive slide high without its lesion's pixels?

For each positive test slide of ``--classes``, the same slide is rendered with its lesions taken out of the
layout after the layout was drawn (sections, follicles, look-alikes, artefacts: all where they were; the
lesion's place shows the tissue under it), and ``magnet evaluate`` scores it with ``--checkpoint``. The
negatives keep their scores from ``--predictions`` (an evaluation of the same checkpoint on the unchanged
test set). If the generator drew nothing but the lesion differently on positive slides, the lesion-free
positives score like negatives: their AUROC against the negatives is 0.5 within its interval. An AUROC
above that means something outside the lesion pixels tells the classes apart: a leak in the generator, or a
zoom steered by the lesion so that its final patches land in a different part of the node.

Writes ``OUT/removed/predictions.csv`` (negatives as given, positives lesion-free), so that

    .venv/bin/python bench/lesion_removed.py --checkpoint RUN/best.ckpt --test /tmp/avp/test/manifest.csv \\
        --predictions RUN_EVAL/predictions.csv --out /tmp/lesion-removed
    .venv/bin/python bench/paired_auroc.py RUN_EVAL/predictions.csv \
        /tmp/lesion-removed/removed/predictions.csv

gives the paired drop per Table-1 column.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from magnet.evaluation.evaluate import evaluate
from magnet.evaluation.reports import write_predictions_csv
from magnet.metrics.auroc import TABLE1_COLUMNS, table1
from magnet.synth import slide as synth_slide


def without_lesions() -> None:
    """Every virtual slide opened from now on in this process is rendered with no lesion."""
    for version, generator in list(synth_slide._GENERATORS.items()):
        draw = generator.layout

        def lesion_free(spec, draw=draw):  # type: ignore[no-untyped-def]
            layout = draw(spec)
            layout.lesions = []
            return layout

        synth_slide._GENERATORS[version] = replace(generator, layout=lesion_free)


def read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return [r for r in csv.DictReader(stream) if not r["error"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True, help="the test manifest (with its lesions.json)")
    parser.add_argument("--predictions", type=Path, required=True,
                        help="predictions.csv of the checkpoint on the unchanged --test")
    parser.add_argument("--classes", nargs="+", default=["itc", "micro"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    with args.test.open(newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if r["lesion_class"] in args.classes]
    args.out.mkdir(parents=True, exist_ok=True)
    subset = args.out / "manifest.csv"
    write_predictions_csv(rows, subset)  # any rows: the manifest's columns in their order
    shutil.copy(args.test.parent / "lesions.json", args.out / "lesions.json")

    without_lesions()
    evaluate(args.checkpoint, subset, args.out / "eval", show_progress=False)
    removed = {r["slide"]: r for r in read_predictions(args.out / "eval" / "predictions.csv")}
    as_is = read_predictions(args.predictions)
    combined = [r for r in as_is if r["class"] == "negative"] + list(removed.values())
    (args.out / "removed").mkdir(exist_ok=True)
    write_predictions_csv(combined, args.out / "removed" / "predictions.csv")

    for name, table in (("as is", as_is), ("lesions removed", combined)):
        metrics = table1([int(r["label"]) for r in table], [float(r["probability"]) for r in table],
                         [r["class"] for r in table])
        cells = []
        for column, _title, _members in TABLE1_COLUMNS:
            auc = metrics[column]["auroc"]
            if auc is not None:
                lo, hi = metrics[column]["ci95"]
                cells.append(f"{column} {auc:.2f} ({lo:.2f}-{hi:.2f})")
        print(f"{name}: " + ", ".join(cells))
    before = {r["slide"]: float(r["probability"]) for r in as_is}
    for cls in args.classes:
        pairs = [(before[s], float(r["probability"])) for s, r in removed.items()
                 if r["class"] == cls and s in before]
        drop = np.array([a - b for a, b in pairs])
        print(f"{cls}: {len(pairs)} slides, probability as is - removed: median {np.median(drop):+.3f}, "
              f"{(drop > 0).mean():.0%} lower without the lesion")


if __name__ == "__main__":
    main()
