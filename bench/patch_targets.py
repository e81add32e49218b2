"""Where do a MagNet's final patches go on virtual slides, and what does its readout make of what they show?

A diagnosis for a learned zoom that loses to its fixed layout. On virtual lymph nodes (generator version 2
or 3) every slide holds benign look-alikes of metastases (``magnet.synth.lookalikes``: germinal centres, one
reactive germinal centre of macro size, histiocyte clusters, large benign cells), coloured like the
carcinoma so that only cells tell them apart. A zoom that learned "go where it looks like tumour" may send
its final patches to the look-alikes of *negative* slides too; a readout that cannot tell a look-alike from
a lesion then scores those negatives high, and a fixed layout, which lands on look-alikes only by chance,
can win. This bench measures each step of that chain from the slides' own geometry (never used in
training):

1. **Where**: each final patch is labelled by what it overlaps (exact box-outline test): ``lesion`` first,
   else the look-alike kind it overlaps most (``reactive_centre`` is the macro-size germinal centre), else
   ``tissue``; the share of final patches per label, by slide class.
2. **Which patch decides**: the label of each slide's highest-scoring patch (``patch_logits``; the
   log-mean-exp readout is led by it), by slide class.
3. **Centred or grazing**: on positive slides, the share of each lesion patch's area inside the lesion, and
   the readout's logit by that share: a zoom can touch as many lesions as another and still read less of
   them.
4. **What**: the mean patch logit per label on the test slides, and a linear probe on the frozen classifier
   CNN's pooled features of the final patches (logistic regression fitted on the training slides' patches,
   AUROC on the test slides' patches): lesion against each look-alike kind and against tissue. A probe
   near 0.5 says the features themselves do not separate the two, whatever the readout.

    OMP_NUM_THREADS=1 .venv/bin/python bench/patch_targets.py --out /tmp/targets \\
        --checkpoint learned=RUN_A/best.ckpt --checkpoint fixed=RUN_B/best.ckpt \\
        --checkpoint learned-as-fixed=RUN_A/best.ckpt@fixed \\
        --train /tmp/avp3/data/manifest.csv --test /tmp/avp3/test/manifest.csv

``NAME=PATH+READOUT`` (after any ``@zoom``) reads the final patches that ``PATH`` places with the classifier
of checkpoint ``READOUT`` (same architecture): two zooms scored by one readout differ only in where their
patches go, e.g. a learned zoom and its fixed layout both read by the classifier of an oracle run.

Patch features and labels are cached per checkpoint in ``--out`` (one evaluation pass over the slides), so a
second call only reports.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.path import Path as OutlinePath
from matplotlib.transforms import Bbox
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from magnet.data.manifest import read_manifest
from magnet.metrics.auroc import table1
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import (
    build_offline,
    checkpoint_config,
    load_checkpoint,
    load_weights,
)
from magnet.training.readout_refit import CachedFeatures, refit_readout

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")
LABELS = ("lesion", "reactive_centre", "germinal_centre", "histiocyte_cluster", "large_cells", "tissue")
CLASSES = ("negative", "macro", "micro", "itc")


def closed_path(polygon: np.ndarray) -> OutlinePath:
    """A closed matplotlib path of a ``(K, 2)`` outline (its first vertex repeated at the end)."""
    return OutlinePath(np.vstack([polygon, polygon[:1]]), closed=True)


def outlines(slide) -> dict[str, list[OutlinePath]]:  # type: ignore[no-untyped-def]
    """The slide's lesion and look-alike outlines by label (level-0 pixels)."""
    found: dict[str, list[OutlinePath]] = {label: [] for label in LABELS[:-1]}
    for polygon in slide.lesions:
        found["lesion"].append(closed_path(polygon))
    for item in slide.lookalikes:
        kind = "reactive_centre" if item.kind == "germinal_centre" and item.mimics == "macro" else item.kind
        found[kind].append(closed_path(item.polygon))
    return found


def grid_points(box: np.ndarray, grid: int) -> np.ndarray:
    """``(grid * grid, 2)`` points evenly inside level-0 ``box`` (x0, y0, x1, y1), none on its edges."""
    xs = np.linspace(box[0], box[2], grid + 2)[1:-1]
    ys = np.linspace(box[1], box[3], grid + 2)[1:-1]
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def box_label(box: np.ndarray, found: dict[str, list[OutlinePath]], grid: int = 24) -> str:
    """``lesion`` if the box touches one; else the look-alike kind covering most of it; else ``tissue``."""
    bbox = Bbox.from_extents(*box)
    touching = {label: [p for p in paths if p.intersects_bbox(bbox, filled=True)]
                for label, paths in found.items()}
    if touching["lesion"]:
        return "lesion"
    points = grid_points(box, grid)
    best, best_share = "tissue", -1.0
    for label, paths in touching.items():
        if not paths:
            continue
        share = float(np.mean(np.any([p.contains_points(points) for p in paths], axis=0)))
        if share > best_share:  # a touching outline smaller than the grid still wins over plain tissue
            best, best_share = label, share
    return best


def lesion_share(box: np.ndarray, lesions: list[OutlinePath], grid: int = 24) -> float:
    """Share of the box's area inside a lesion outline (on a ``grid`` x ``grid`` lattice of points): near 1
    for a patch centred on a lesion larger than it, small for one that grazes a lesion with its rim."""
    if not lesions:
        return 0.0
    points = grid_points(box, grid)
    return float(np.mean(np.any([p.contains_points(points) for p in lesions], axis=0)))


def box_targets(boxes: np.ndarray, found: dict[str, list[OutlinePath]]) -> tuple[list[str], list[float]]:
    """Each level-0 box's label (``box_label``) and lesion share (``lesion_share``; 0 for a box off the
    lesions, without testing points)."""
    targets = [box_label(b, found) for b in boxes]
    return targets, [lesion_share(b, found["lesion"]) if t == "lesion" else 0.0
                     for b, t in zip(boxes, targets, strict=True)]


def load_with_zoom(checkpoint: Path, zoom: str, readout: Path | None = None):  # type: ignore[no-untyped-def]
    """The checkpoint's model, in eval mode; with ``zoom`` (fixed, random) its final patches are placed by
    that control instead of the trained zoom, and read by the same classifier, or with ``readout`` by the
    classifier of that checkpoint."""
    payload = load_checkpoint(checkpoint)
    config = checkpoint_config(payload, checkpoint)
    model = build_offline(replace(config.model, zoom=zoom) if zoom else config.model)
    weights = dict(payload["model"])
    if zoom:  # a control has no head-MIL biases: the zoom's, which it does not use
        own = model.state_dict()
        weights = {k: v for k, v in weights.items() if k in own}
    if readout is not None:
        other = load_checkpoint(readout)["model"]
        weights.update({k: v for k, v in other.items() if k.startswith("classifier.")})
    load_weights(model, weights, checkpoint)
    return model.eval(), config


def cache_array(features: torch.Tensor) -> np.ndarray:
    """One slide's features as cached: float16, in C order. The frozen CNN's maps come out channels-last;
    kept so, a fit on them sums in another order than a fit on the same values loaded from the cache, and
    the fresh readout's best pass moved by that rounding alone (docs/BENCHMARKS.md, "Where the two
    placements send their patches")."""
    return np.ascontiguousarray(features.float().cpu().numpy().astype(np.float16))


@torch.no_grad()
def extract(checkpoint: Path, zoom: str, readout: Path | None, manifest_path: Path, splits: set[str],
            cache: Path, batch: int) -> dict:
    if cache.exists():
        return torch.load(cache, weights_only=False)  # type: ignore[no-any-return]
    model, config = load_with_zoom(checkpoint, zoom, readout)
    rows = [r for r in read_manifest(manifest_path, check_slides=False).rows if r.split in splits]
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    slides: list[dict] = []
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        readers = [pool.get(r.slide) for r in chunk]
        out = model.final_patches(readers)  # the forward pass up to what the readout reads
        features = model.classifier.features(out.patches[-1])  # (B, N, D): what the readout reads
        read = model.classifier.read_out(features)
        if read.patch_logits is None:
            raise SystemExit("patch_targets: the readout must give per-patch logits (not the GRU)")
        for j, (row, reader) in enumerate(zip(chunk, readers, strict=True)):
            found = outlines(reader.slide)
            targets, shares = box_targets(out.boxes_level0[-1][j].double().cpu().numpy(), found)
            slides.append({
                "slide": row.slide, "split": row.split, "class": row.lesion_class or "negative",
                "label": row.label, "probability": float(torch.sigmoid(read.logit[j])),
                "patch_logits": read.patch_logits[j].float().cpu().numpy(),
                "targets": targets, "lesion_share": shares,
                "features": cache_array(features[j]),
            })
        pool.close()
        if (i // batch) % 10 == 0:
            print(f"{cache.stem}: {i + len(chunk)}/{len(rows)} slides, {time.perf_counter() - t0:.0f} s",
                  flush=True)
    data = {"slides": slides}
    torch.save(data, cache)
    return data


def where(slides: list[dict]) -> dict[str, dict[str, float]]:
    """Share of final patches per target label, by slide class."""
    table = {}
    for cls in CLASSES:
        counts = Counter(t for s in slides if s["class"] == cls for t in s["targets"])
        total = sum(counts.values())
        if total:
            table[cls] = {label: counts[label] / total for label in LABELS}
    return table


def deciding(slides: list[dict]) -> dict[str, dict[str, float]]:
    """Share of slides whose highest-scoring final patch has each target label, by slide class."""
    table = {}
    for cls in CLASSES:
        tops = [s["targets"][int(np.argmax(s["patch_logits"]))] for s in slides if s["class"] == cls]
        if tops:
            counts = Counter(tops)
            table[cls] = {label: counts[label] / len(tops) for label in LABELS}
    return table


def logits_by_target(slides: list[dict]) -> dict[str, dict[str, float]]:
    """Mean patch logit per target label, on negative slides and on positive slides."""
    table = {}
    for side, keep in (("negative", lambda s: s["label"] == 0), ("positive", lambda s: s["label"] == 1)):
        values: dict[str, list[float]] = {label: [] for label in LABELS}
        for s in filter(keep, slides):
            for target, logit in zip(s["targets"], s["patch_logits"], strict=True):
                values[target].append(float(logit))
        table[side] = {label: float(np.mean(v)) for label, v in values.items() if v}
        table[side].update({f"n_{label}": len(v) for label, v in values.items() if v})
    return table


def patch_arrays(slides: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Each final patch's pooled features (a readout over cells caches ``(N, D, h, w)``: the mean over the
    cells is the patch's pooled feature) and its target label."""
    features = np.concatenate([s["features"] for s in slides]).astype(np.float32)
    features = features.reshape(*features.shape[:2], -1).mean(-1)
    return features, np.array([t for s in slides for t in s["targets"]])


def probes(train: list[dict], test: list[dict]) -> dict[str, float | None]:
    """Linear probe AUROC on test patches: lesion against each other label (fitted on train patches)."""
    x_train, y_train = patch_arrays(train)
    x_test, y_test = patch_arrays(test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    result: dict[str, float | None] = {}
    for other in LABELS[1:]:
        fit_rows = np.isin(y_train, ["lesion", other])
        test_rows = np.isin(y_test, ["lesion", other])
        counts = [int((y_train == k).sum()) for k in ("lesion", other)]
        test_counts = [int((y_test == k).sum()) for k in ("lesion", other)]
        if min(counts) < 5 or min(test_counts) < 5:
            result[f"lesion_vs_{other}"] = None
            continue
        probe = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
        probe.fit((x_train[fit_rows] - mean) / std, y_train[fit_rows] == "lesion")
        scores = probe.decision_function((x_test[test_rows] - mean) / std)
        result[f"lesion_vs_{other}"] = float(roc_auc_score(y_test[test_rows] == "lesion", scores))
        result[f"n_lesion_vs_{other}"] = test_counts  # type: ignore[assignment]
    return result


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}\n| | " + " | ".join(LABELS) + " |\n|---|" + "---|" * len(LABELS))
    for row, cells in table.items():
        print(f"| {row} | " + " | ".join(f"{cells[k]:.2f}" if k in cells else "-" for k in LABELS) + " |")


def cached_features(slides: list[dict]) -> CachedFeatures:
    """Cached slides (``extract``) as the product's refit takes them: features, labels, slide names."""
    features = torch.from_numpy(np.stack([s["features"] for s in slides]).astype(np.float32))
    labels = torch.tensor([float(s["label"]) for s in slides])
    return CachedFeatures(features, labels, [s["slide"] for s in slides], {})


def fresh_readout(classifier, train: list[dict], epochs: int = 30, seed: int = 0):  # type: ignore[no-untyped-def]
    """A fresh readout (``classifier``'s head re-initialised) fitted on the cached patch features with the
    slide labels only by the product's refit (``magnet.training.readout_refit.refit_readout``: Adam 1e-4,
    weight decay 1e-4, one slide per step), the pass with the best AUROC on a held-out fifth of the training
    slides kept: ``(classifier, fit)``."""
    order = np.random.default_rng(seed).permutation(len(train))
    held = set(order[: len(train) // 5].tolist())
    fresh = copy.deepcopy(classifier)
    torch.manual_seed(seed)
    for layer in fresh.head.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    fit = refit_readout(fresh, cached_features([s for i, s in enumerate(train) if i not in held]),
                        cached_features([s for i, s in enumerate(train) if i in held]),
                        epochs=epochs, lr=1e-4, weight_decay=1e-4, seed=seed)
    return fresh, fit


def refit_from_labels(classifier, train: list[dict], test: list[dict],  # type: ignore[no-untyped-def]
                      epochs: int = 30, seed: int = 0) -> dict:
    """Test AUROC of a ``fresh_readout`` fitted on ``train``: what the readout could have learned from these
    patches, against what the run's did; with its test-slide logits (``scores``)."""
    fresh, fit = fresh_readout(classifier, train, epochs, seed)
    with torch.no_grad():
        scores = fresh.read_out(cached_features(test).features).logit.tolist()
    metrics = table1([s["label"] for s in test], scores, [s["class"] for s in test])
    return {"held_out_all": fit.val_auroc_after, "pass": fit.best_epoch,
            **{c: (metrics[c]["auroc"], metrics[c]["ci95"]) for c in COLUMNS}, "scores": scores}


def hit_share(slides: list[dict]) -> dict[str, float]:
    """Share of positive slides with a final patch on a lesion, per class."""
    return {c: float(np.mean([("lesion" in s["targets"]) for s in slides if s["class"] == c]))
            for c in CLASSES[1:] if any(s["class"] == c for s in slides)}


SHARE_BINS = ((0.0, 0.1), (0.1, 0.5), (0.5, 1.01))  # a lesion's rim in the patch, part of it, most of it


def lesion_cover(slides: list[dict]) -> dict[str, dict[str, float]]:
    """Centred or grazing? Per positive class, over the slides with a final patch on a lesion: the mean of
    each slide's largest lesion share of a patch (``lesion_share``), and the share of lesion patches and
    their mean logit in each bin of lesion share. Caches written before ``lesion_share`` was stored give
    nothing."""
    table: dict[str, dict[str, float]] = {}
    for cls in CLASSES[1:]:
        hit = [s for s in slides if s["class"] == cls and "lesion" in s["targets"] and "lesion_share" in s]
        if not hit:
            continue
        row = {"slides": float(len(hit)), "best_share": float(np.mean([max(s["lesion_share"]) for s in hit]))}
        pairs = [(share, float(logit)) for s in hit
                 for share, logit, target in zip(s["lesion_share"], s["patch_logits"], s["targets"],
                                                 strict=True)
                 if target == "lesion"]
        for low, high in SHARE_BINS:
            inside = [logit for share, logit in pairs if low <= share < high]
            row[f"patches {low:.1f}-{min(high, 1.0):.1f}"] = len(inside) / len(pairs)
            if inside:  # an empty bin has no mean logit (and report.json stays plain JSON)
                row[f"logit {low:.1f}-{min(high, 1.0):.1f}"] = float(np.mean(inside))
        table[cls] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="NAME=PATH, NAME=PATH@fixed (patches placed by that zoom), either with "
                        "+READOUT_PATH (read by that checkpoint's classifier); repeatable")
    parser.add_argument("--train", type=Path, required=True, help="manifest with the train split (probe fit)")
    parser.add_argument("--test", type=Path, required=True, help="manifest of the test slides")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for item in args.checkpoint:
        name, _, given = item.partition("=")
        given, _, other = given.partition("+")
        path, _, zoom = given.partition("@")
        readout = Path(other) if other else None
        caches = {split: args.out / f"{name}-{split}.pt" for split in ("train", "test")}
        train = extract(Path(path), zoom, readout, args.train, {"train"}, caches["train"],
                        args.batch)["slides"]
        test = extract(Path(path), zoom, readout, args.test, {"test"}, caches["test"], args.batch)["slides"]
        classifier = load_with_zoom(Path(path), zoom)[0].classifier  # its head's shape, for a fresh readout
        report[name] = {"where": where(test), "deciding": deciding(test), "logits": logits_by_target(test),
                        "probe": probes(train, test), "hit": hit_share(test), "hit_train": hit_share(train),
                        "cover": lesion_cover(test), "cover_train": lesion_cover(train),
                        "model": table1([s["label"] for s in test], [s["probability"] for s in test],
                                        [s["class"] for s in test]),
                        "readout_from_labels": refit_from_labels(classifier, train, test)}
        print(f"\n## {name} ({path})")
        print_table("Share of final patches on each target (test slides)", report[name]["where"])
        print_table("Target of the highest-scoring patch (share of test slides)", report[name]["deciding"])
        print_table("Mean patch logit per target (test slides)", report[name]["logits"])
        hits = {k: round(v, 2) for k, v in report[name]["hit"].items()}
        print("\nSlides with a final patch on a lesion:", hits)
        # a zoom that learned the training slides' lesions reaches them more often than the test slides'
        print("... on the training slides:", {k: round(v, 2) for k, v in report[name]["hit_train"].items()})
        for suffix, key in (("", "cover"), (" (training slides)", "cover_train")):
            for cls, row in report[name][key].items():
                print(f"Lesion share of the patches on a lesion{suffix}, {cls}:",
                      {k: round(v, 2) for k, v in row.items()})
        print("The model's AUROC:", {c: round(report[name]["model"][c]["auroc"], 2) for c in COLUMNS})
        print("A fresh readout fitted on these patches from slide labels:",
              {k: (round(v[0], 2) if isinstance(v, tuple) else v)
               for k, v in report[name]["readout_from_labels"].items() if k != "scores"})
        print("\nLinear probe on pooled classifier features, test-patch AUROC:",
              {k: (round(v, 3) if isinstance(v, float) else v) for k, v in report[name]["probe"].items()})
    (args.out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
