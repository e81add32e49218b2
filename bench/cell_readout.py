"""Does a readout over the cells of each final patch see small lesions that one over whole patches misses?

A MagNet's readout scores each final patch from the CNN features pooled over the whole patch (448 um at
2 um/px on the 112²-view tree) and pools the patch logits (log-mean-exp). A micro-metastasis or a cluster of
isolated tumour cells fills a few of the CNN map's cells (Lite0 at 224 px: 7 x 7 cells of about 64 um), so
the average over the patch dilutes it among tissue. Even the oracle, whose every final patch lies on the
lesion, scores ITC at 0.61-0.66 (docs/BENCHMARKS.md, "The whole curve", "Seed 2 on version 4"). This bench
asks whether the cells themselves, as the instances of the multiple-instance readout, do better.

For each trained run (its checkpoint as training left it, ``best-trained.ckpt``) it caches every slide's
final-patch CNN maps ``(N, D, h, w)`` once (the product's ``final_patch_features`` of the run's model read
over cells: evaluation mode, the zoom as at inference; the oracle's ROIs for an oracle run), then fits two
readouts on the same cache with the product's refit (``magnet.training.readout_refit.refit_readout``:
start from the trained FC head, Adam 1e-4, weight decay 1e-4, one slide per step, ``--epochs`` passes, the
pass with the best validation AUROC kept):

- ``patch``: the product's readout: the head on each patch's pooled features, log-mean-exp over patches
  (what ``magnet refit`` does);
- ``cells``: the same head on each cell's features, log-mean-exp over every cell of every patch
  (``model.readout_instances=cells``, the run's model rebuilt with it: the same weights; multiple
  instances at the cells' scale: the pooling of Ilse et al. 2018 and CLAM's instances, Lu et al. 2021,
  applied to the CNN map's cells as in class activation maps, Zhou et al. 2016).

``--set KEY=VALUE ...`` changes the runs' configs before their final patches are read (the cache then
holds other patches; give such a run its own name): ``model.oracle_side=0.027`` halves an oracle's boxes,
so its 224-px patches read 1 um of slide per pixel instead of 2 with the same pixels decoded.

Each readout's test predictions are written as ``NAME-READOUT.csv`` (``magnet evaluate``'s columns), so
``bench/paired_auroc.py NAME-patch.csv NAME-cells.csv`` pairs them on the same slides.

    OMP_NUM_THREADS=1 .venv/bin/python bench/cell_readout.py --out /tmp/cells \\
        --run fixed=RUN/best-trained.ckpt --data /tmp/avp4/data/manifest.csv \\
        --test /tmp/avp4/test/manifest.csv
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from magnet.config_io import apply_override
from magnet.data.manifest import read_manifest
from magnet.evaluation.reports import write_predictions_csv
from magnet.inference.oracle import OracleZoom
from magnet.metrics.auroc import table1
from magnet.metrics.localisation import manifest_outlines
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import build_offline, checkpoint_config, load_checkpoint, load_weights
from magnet.training.readout_refit import CachedFeatures, final_patch_features, refit_readout

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")


def load_run(checkpoint: Path, instances: str, pool: str | None = None,  # type: ignore[no-untyped-def]
             overrides: Sequence[str] = ()):
    """The run's model built with ``readout_instances=instances`` and, if given, ``readout=pool`` (the same
    weights: max and lse share the per-patch head) and the config ``overrides`` (``KEY=VALUE``, as
    ``magnet train --set``), in evaluation mode."""
    payload = load_checkpoint(checkpoint)
    config = checkpoint_config(payload, checkpoint)
    for item in overrides:
        config = apply_override(config, item)
    model = build_offline(replace(config.model, readout_instances=instances,
                                  readout=pool or config.model.readout))
    load_weights(model, payload["model"], checkpoint)
    return model.eval(), config


def oracle_for(model, config, rows: list, manifest: Path) -> OracleZoom | None:  # type: ignore[no-untyped-def]
    """The oracle that places ``model``'s final ROIs over ``rows`` when its zoom needs one (from the
    manifest's outlines), else None: the tree's own boxes."""
    if not model.needs_final_rois:
        return None
    outlines = manifest_outlines(rows, manifest.parent)
    return OracleZoom.for_manifest(config.model, rows, manifest.parent, str(manifest), outlines)


def extract(checkpoint: Path, manifest: Path, splits: set[str], cache: Path, batch: int,
            overrides: Sequence[str] = ()) -> dict:
    """Every slide of ``splits``: its final patches' CNN maps (float16, ``final_patch_features`` of the model
    read over cells), label, class and split; cached."""
    if cache.exists():
        return torch.load(cache, weights_only=False)  # type: ignore[no-any-return]
    model, config = load_run(checkpoint, "cells", overrides=overrides)
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split in splits]
    oracle = oracle_for(model, config, rows, manifest)
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    t0 = time.perf_counter()
    with torch.no_grad():
        data = final_patch_features(model, rows, pool, batch_size=batch, oracle=oracle, seed=config.seed)
    pool.close()
    if data.skipped:
        raise SystemExit(f"cell_readout: slides that could not be read: {data.skipped}")
    print(f"{cache.stem}: {len(rows)} slides, {time.perf_counter() - t0:.0f} s", flush=True)
    slides = [{"slide": row.slide, "split": row.split, "label": row.label,
               "class": row.lesion_class or "negative", "maps": maps.half()}
              for row, maps in zip(rows, data.features, strict=True)]
    result = {"slides": slides, "checkpoint": str(checkpoint), "overrides": list(overrides)}
    torch.save(result, cache)
    return result


def cached(slides: list[dict], instances: str) -> CachedFeatures:
    """The slides' maps as a readout over ``instances`` reads them: the maps, or their global pool."""
    maps = torch.stack([s["maps"] for s in slides]).float()
    features = maps if instances == "cells" else maps.mean(dim=(-2, -1))
    labels = torch.tensor([float(s["label"]) for s in slides])
    return CachedFeatures(features, labels, [s["slide"] for s in slides], {})


def write_predictions(path: Path, slides: list[dict], logits: list[float]) -> None:
    rows = [{"slide": s["slide"], "probability": 1 / (1 + math.exp(-logit)), "label": s["label"],
             "class": s["class"], "error": ""} for s, logit in zip(slides, logits, strict=True)]
    write_predictions_csv(rows, path)


def metrics_line(labels: list, scores: list[float], classes: list[str]) -> str:
    """Each Table-1 column's AUROC and 95 % interval on one line."""
    metrics = table1(labels, scores, classes)
    return "  ".join(f"{c} {metrics[c]['auroc']:.3f} ({metrics[c]['ci95'][0]:.2f}-"
                     f"{metrics[c]['ci95'][1]:.2f})" for c in COLUMNS)


def fit_and_report(name: str, kind: str, checkpoint: Path, slides: dict[str, list[dict]], out: Path, *,
                   epochs: int, seed: int, pool: str | None = None) -> None:
    """Refit the readout of run ``checkpoint`` over ``kind`` (``patch`` or ``cells``; ``pool`` instead of
    the run's own) on cached ``slides`` (train, validation, test); write the test predictions, refitted and
    as trained, as ``NAME-KIND[-POOL][-trained].csv`` and print their metrics."""
    suffix = f"-{pool}" if pool else ""
    instances = "patches" if kind == "patch" else "cells"
    readout = load_run(checkpoint, instances, pool)[0].classifier
    test = slides["test"]
    train, val = cached(slides["train"], instances), cached(slides["validation"], instances)
    test_maps = cached(test, instances).features
    with torch.no_grad():
        trained = readout.read_out(test_maps).logit.tolist()
    result = refit_readout(readout, train, val, epochs=epochs, lr=1e-4, weight_decay=1e-4, seed=seed)
    with torch.no_grad():
        logits = readout.read_out(test_maps).logit.tolist()
    write_predictions(out / f"{name}-{kind}{suffix}.csv", test, logits)
    write_predictions(out / f"{name}-{kind}{suffix}-trained.csv", test, trained)
    classes = [s["class"] for s in test]
    labels = [s["label"] for s in test]
    for title, scores in (("refit", logits), ("as trained", trained)):
        print(f"{name} {kind}{suffix} {title}: {metrics_line(labels, scores, classes)}", flush=True)
    print(f"{name} {kind}{suffix}: val {result.val_auroc_before:.3f} -> {result.val_auroc_after:.3f}, pass "
          f"{result.best_epoch} of {result.epochs}, {result.seconds:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=CKPT")
    parser.add_argument("--data", type=Path, required=True,
                        help="manifest with the train and validation splits")
    parser.add_argument("--test", type=Path, required=True, help="manifest with the test split")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readouts", nargs="+", default=["patch", "cells"], choices=["patch", "cells"])
    parser.add_argument("--pool", choices=["max", "lse"], default=None,
                        help="the readout's pool instead of the run's own (the outputs' names end in -POOL)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides of each run's config for reading its final patches (e.g. "
                             "model.oracle_side=0.027: an oracle's boxes at half the side)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.run:
        name, ckpt = spec.split("=", 1)
        checkpoint = Path(ckpt)
        slides = {split: extract(checkpoint, args.test if split == "test" else args.data, {split},
                                 args.out / f"{name}-{split}.pt", args.batch, args.set)["slides"]
                  for split in ("train", "validation", "test")}
        for kind in args.readouts:
            fit_and_report(name, kind, checkpoint, slides, args.out, epochs=args.epochs, seed=args.seed,
                           pool=args.pool)

if __name__ == "__main__":
    main()
