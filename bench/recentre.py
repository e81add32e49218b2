"""Re-centre each final patch on its most tumour-like cell, read it again: what does the readout make of it?

A diagnosis of the last step of a MagNet's zoom on virtual slides (``bench/patch_targets.py`` found it): a
final patch that grazes a micro-metastasis with its rim, less than a tenth of its area on the lesion, scores
like a benign look-alike, and a third of the patches that count as hits are such rims. The heads choose the
final boxes at 9-73 um per pixel; the classifier reads them at 2 um per pixel, where cells show. This bench
asks whether a "saccade" driven by that finer look pays, on a checkpoint trained without it: the step of
``model.recentre`` (``magnet.models.recentre.recentre_final``): the classifier's head applied to each cell
of the CNN's spatial map of a final patch (EfficientNet-Lite0: 7 x 7 cells of about 64 um at 2 um/px), the
box shifted, at the same scale, so that its highest-scoring cell is at its centre, and read again from the
slide. A fresh readout is fitted on each set of patches from the slide labels
(``patch_targets.fresh_readout``, the product's refit), as a run with ``model.recentre`` would train its
readout on the moved patches.

Three sets of final patches per slide, each with a fresh readout fitted on the training slides' patches:

- ``as placed``: the model's own final patches (sampled from each parent's read, as in training);
- ``direct``: the same boxes read directly from the slide at the final size, as the re-centred ones are
  (the control for the way of reading: the oracle's reads are direct too);
- ``recentred``: the shifted boxes, read directly. ``recentred - direct`` on the same test slides is what
  the shift alone does (``bench/paired_auroc.py``'s paired bootstrap, per readout seed).

The cost is a second read of every final patch: the pixels decoded per slide for the final patches double
(the tree's earlier reads stay). For each set the bench also reports where the boxes land (hit share,
lesion share of the patches on a lesion, as ``patch_targets``), so a gain can be told apart as more
lesions reached or lesions read better.

    cd bench && OMP_NUM_THREADS=1 ../.venv/bin/python recentre.py --out /tmp/recentre \\
        --checkpoint fixed=RUN_F/best.ckpt --checkpoint shared=RUN_S/best.ckpt \\
        --train /tmp/avp4/data/manifest.csv --test /tmp/avp4/test/manifest.csv

The features and targets of every slide are cached in ``--out`` (one pass per checkpoint and split). With two
or more checkpoints, each one after the first is also paired against the first on every patch set (e.g. a
learned zoom against its fixed layout, both re-centred).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from paired_auroc import paired_differences
from patch_targets import (
    COLUMNS,
    box_targets,
    cache_array,
    hit_share,
    lesion_cover,
    load_with_zoom,
    outlines,
    refit_from_labels,
)

from magnet.data.manifest import read_manifest
from magnet.geometry import read_views
from magnet.models.recentre import recentre_final
from magnet.slides.pool import SlidePool

SETS = ("as_placed", "direct", "recentred")


@torch.no_grad()
def extract(checkpoint: Path, manifest_path: Path, splits: set[str], cache: Path, batch: int) -> dict:
    """Per slide and per patch set: pooled features, targets and lesion shares of the boxes; cached."""
    if cache.exists():
        return torch.load(cache, weights_only=False)  # type: ignore[no-any-return]
    model, config = load_with_zoom(checkpoint, "")
    classifier = model.classifier
    size = config.model.final_size
    rows = [r for r in read_manifest(manifest_path, check_slides=False).rows if r.split in splits]
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    device = torch.device("cpu")
    slides: list[dict] = []
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        readers = [pool.get(r.slide) for r in chunk]
        out = model.zoom_in(readers)  # the last layer's patches as sampled, whatever the final step
        rois, patches, boxes = out.rois[-1], out.patches[-1], out.boxes_level0[-1]
        features = {"as_placed": classifier.features(patches),
                    "direct": classifier.features(read_views(readers, rois, size, device))}
        recentre_final(out, readers, classifier, size)  # model.recentre's step: the last layer's boxes moved
        features["recentred"] = classifier.features(out.patches[-1])
        for j, (row, reader) in enumerate(zip(chunk, readers, strict=True)):
            found = outlines(reader.slide)
            entry = {"slide": row.slide, "split": row.split, "class": row.lesion_class or "negative",
                     "label": row.label}
            for name, set_boxes in (("direct", boxes), ("recentred", out.boxes_level0[-1])):
                level0 = set_boxes[j].double().cpu().numpy()
                entry[f"{name}_targets"], entry[f"{name}_share"] = box_targets(level0, found)
            for name, set_features in features.items():
                entry[f"{name}_features"] = cache_array(set_features[j])
            slides.append(entry)
        pool.close()
        if (i // batch) % 10 == 0:
            print(f"{cache.stem}: {i + len(chunk)}/{len(rows)} slides, {time.perf_counter() - t0:.0f} s",
                  flush=True)
    data = {"slides": slides}
    torch.save(data, cache)
    return data


def view(slides: list[dict], name: str) -> list[dict]:
    """The slides as ``patch_targets`` reads them, for patch set ``name`` ("as placed": the direct boxes)."""
    boxes = "recentred" if name == "recentred" else "direct"
    return [{**{k: s[k] for k in ("slide", "split", "class", "label")}, "features": s[f"{name}_features"],
             "targets": s[f"{boxes}_targets"], "lesion_share": s[f"{boxes}_share"]} for s in slides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH; repeatable")
    parser.add_argument("--train", type=Path, required=True, help="manifest with the train split")
    parser.add_argument("--test", type=Path, required=True, help="manifest of the test slides")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="readout fit seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    test_slides: dict[str, list[str]] = {}
    test_classes = np.array([])
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        train = extract(Path(path), args.train, {"train"}, args.out / f"{name}-train.pt", args.batch)
        test = extract(Path(path), args.test, {"test"}, args.out / f"{name}-test.pt", args.batch)
        classifier = load_with_zoom(Path(path), "")[0].classifier
        report[name] = {}
        for patch_set in SETS:
            fits = {seed: refit_from_labels(classifier, view(train["slides"], patch_set),
                                            view(test["slides"], patch_set), seed=seed)
                    for seed in args.seeds}
            report[name][patch_set] = {"hit": hit_share(view(test["slides"], patch_set)),
                                       "cover": lesion_cover_by_box(view(test["slides"], patch_set)),
                                       "fits": fits}
        classes = np.array([s["class"] for s in test["slides"]])
        report[name]["recentred_minus_direct"] = {
            seed: paired_differences(classes, np.array(report[name]["direct"]["fits"][seed]["scores"]),
                                     np.array(report[name]["recentred"]["fits"][seed]["scores"]))
            for seed in args.seeds}
        print_report(name, path, report[name])
        test_slides[name] = [s["slide"] for s in test["slides"]]
        test_classes = classes
    first, *others = list(report)
    for other in others:  # e.g. a learned zoom against its fixed layout, each set read by its own readout
        if test_slides[other] != test_slides[first]:
            raise SystemExit(f"recentre: {first} and {other} were not scored on the same test slides")
        pairs = {patch_set: {seed: paired_differences(test_classes,
                                                      np.array(report[first][patch_set]["fits"][seed]["scores"]),
                                                      np.array(report[other][patch_set]["fits"][seed]["scores"]))
                             for seed in args.seeds} for patch_set in SETS}
        report[f"{other}_minus_{first}"] = pairs
        for patch_set, by_seed in pairs.items():
            for seed, rows in by_seed.items():
                print(f"{other} - {first}, {patch_set}, readout seed {seed}:", paired_text(rows))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))


def paired_text(rows: list[tuple[str, float, float, float, int, int]]) -> dict[str, str]:
    return {title: f"{d:+.3f} ({lo:+.3f} to {hi:+.3f})" for title, d, lo, hi, _, _ in rows}


def lesion_cover_by_box(slides: list[dict]) -> dict[str, dict[str, float]]:
    """``patch_targets.lesion_cover`` without the logit bins (these slides carry no model logits): per
    positive class the mean best lesion share and the share of lesion patches per share bin."""
    with_logits = [{**s, "patch_logits": np.zeros(len(s["targets"]))} for s in slides]
    return {cls: {k: v for k, v in row.items() if not k.startswith("logit")}
            for cls, row in lesion_cover(with_logits).items()}


def interval(value: float | None, ci: tuple[float, float] | None) -> str:
    """``0.93 (0.88-0.97)``; ``-`` where a class has no slides."""
    if value is None:
        return "-"
    return f"{value:.2f}" if ci is None else f"{value:.2f} ({ci[0]:.2f}-{ci[1]:.2f})"


def print_report(name: str, path: str, report: dict) -> None:
    print(f"\n## {name} ({path})")
    for patch_set in SETS:
        part = report[patch_set]
        print(f"\n{patch_set}: hit", {k: round(v, 2) for k, v in part["hit"].items()})
        for cls, row in part["cover"].items():
            print(f"  lesion share, {cls}:", {k: round(v, 2) for k, v in row.items()})
        for seed, fit in part["fits"].items():
            print(f"  readout seed {seed}:", {c: interval(*fit[c]) for c in COLUMNS}, "pass", fit["pass"])
    for seed, rows in report["recentred_minus_direct"].items():
        print(f"recentred - direct, paired, readout seed {seed}:", paired_text(rows))


if __name__ == "__main__":
    main()
