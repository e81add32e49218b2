"""Do a learned MagNet's localisation heads point at lesions, or at lesion-like spots, where they look?

The boxes of a learned zoom go where its heads' maps peak (docs/method.md §2.3), and head MIL trains those
maps as tumour scores from slide labels (docs/method.md §9). On virtual lymph nodes of generator version 3,
every slide carries about 16 benign look-alikes coloured like the carcinoma, told from a lesion by cells only
(docs/virtual-slides.md, resolution curve: lesion vs look-alike at chance at 8 um/px and coarser), while
each layer's heads see their parent at 12-48 um/px. So a head can at best find the *candidates* (lesions
and look-alikes alike) and cannot tell which one is the lesion. This bench measures, on the test slides and
from their ground-truth outlines (never used in training), how each layer's heads rank the pixels of their
parent views:

- ``lesion_vs_tissue``: a lesion pixel against a plain tissue pixel (positive slides);
- ``candidate_vs_tissue``: a lesion or look-alike pixel against plain tissue (every slide);
- ``lesion_vs_lookalike``: a lesion pixel against a look-alike pixel (positive slides);
- ``nests_vs_plain`` (version 4 only): a lesion or look-alike pixel drawn with the nest pattern against one
  without it (docs/virtual-slides.md, "Version 4"): do the heads pick up the cue that says where to look?

Each is the AUROC of the heads' raw scores (what head MIL pools and the sparsemax ranks) over the tissue
pixels of each head's own strip, pooled over the layer's heads of one slide, then averaged over the slides
that have both kinds of pixel (95 % interval: bootstrap over slides). Beside it the same AUROC for a score
that needs no learning, the view's brightness (mean RGB, blurred with the heads' high-pass sigma): do
lesion-like spots stand out by colour alone at that resolution? And of the part of that brightness the heads'
input keeps (``contrast``: the local contrast I - blur(I) the heads see, ``model.head_highpass``, blurred the
same way, a difference of Gaussians): a spot wider than the blur keeps only its rim there. Tissue is the
grey filter's test (max - min RGB >= 15 of 255); a pixel is a lesion (look-alike) when its centre lies
inside an outline.

    OMP_NUM_THREADS=2 .venv/bin/python bench/head_maps.py --out /tmp/heads \\
        --checkpoint seed1=RUN_A/best.ckpt --checkpoint seed2=RUN_B/best.ckpt \\
        --test /tmp/avp3/test/manifest.csv
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.path import Path as OutlinePath
from patch_targets import closed_path, outlines
from sklearn.metrics import roc_auc_score

from magnet.data.manifest import read_manifest
from magnet.geometry import roi_to_level0_box
from magnet.layers.blur import gaussian_blur
from magnet.layers.tissue import tissue_pixels
from magnet.slides.pixels import GREY_THRESHOLD
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import build_offline, checkpoint_config, load_checkpoint, load_weights

_LESION, _MIMIC = {"lesion", "lesion+nests"}, {"lookalike", "lookalike+nests"}
CONTRASTS = {  # name: (positive pixel labels, negative pixel labels)
    "lesion_vs_tissue": (_LESION, {"tissue"}),
    "candidate_vs_tissue": (_LESION | _MIMIC, {"tissue"}),
    "lesion_vs_lookalike": (_LESION, _MIMIC),
    "nests_vs_plain": ({"lesion+nests", "lookalike+nests"}, {"lesion", "lookalike"}),  # version 4 only
}
SCORES = ("heads", "brightness", "contrast")


def pixel_labels(box: np.ndarray, size: int, lesions: list[OutlinePath], lookalikes: list[OutlinePath],
                 tissue: np.ndarray, nested: Sequence[OutlinePath] = ()) -> np.ndarray:
    """``(size, size)`` labels of a view of level-0 ``box`` (x0, y0, x1, y1): ``lesion``, ``lookalike``,
    ``tissue`` or ``glass``, by the level-0 centre of each pixel; a lesion or look-alike pixel inside one of
    the ``nested`` outlines (version 4's nest pattern) gets ``+nests``."""
    xs = box[0] + (np.arange(size) + 0.5) * (box[2] - box[0]) / size
    ys = box[1] + (np.arange(size) + 0.5) * (box[3] - box[1]) / size
    centres = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    labels = np.where(tissue.reshape(-1), "tissue", "glass").astype(object)
    for paths, name in ((lookalikes, "lookalike"), (lesions, "lesion")):  # a lesion drawn over a mimic wins
        for path in paths:
            labels[path.contains_points(centres)] = name
    in_nests = np.zeros(len(centres), bool)
    for path in nested:
        in_nests |= path.contains_points(centres)
    candidate = np.isin(labels, ["lesion", "lookalike"])
    labels[in_nests & candidate] = labels[in_nests & candidate] + "+nests"
    return labels.reshape(size, size)


def slide_auroc(
    scores: np.ndarray, labels: np.ndarray, positive: set[str], negative: set[str]
) -> float | None:
    """AUROC of ``scores`` for pixels labelled ``positive`` against ``negative``; None without both."""
    keep = np.isin(labels, list(positive | negative))
    target = np.isin(labels[keep], list(positive))
    if target.all() or not target.any():
        return None
    return float(roc_auc_score(target, scores[keep]))


@torch.no_grad()
def measure(checkpoint: Path, manifest: Path, batch: int) -> list[dict]:
    """Per test slide and layer: the AUROC of each contrast for the heads' scores and for brightness."""
    payload = load_checkpoint(checkpoint)
    config = checkpoint_config(payload, checkpoint)
    if config.model.zoom != "learned":
        zoom = config.model.zoom
        raise SystemExit(f"head_maps: {checkpoint} has zoom={zoom!r}; only a learned zoom has heads")
    model = build_offline(config.model)
    load_weights(model, payload["model"], checkpoint)
    model.eval()
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == "test"]
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    size, sigma = config.model.view_size, max(config.model.head_highpass, 1.0)
    results: list[dict] = []
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        readers = [pool.get(r.slide) for r in chunk]
        out = model.zoom_in(readers)
        assert out.root_rois is not None
        for j, (row, reader) in enumerate(zip(chunk, readers, strict=True)):
            slide = reader.slide
            mpp = (slide.mpp or (0.25, 0.25))[0]  # virtual slides: 0.25 um per level-0 pixel
            found = outlines(slide)
            lesions = found.pop("lesion")
            nested = [closed_path(polygon) for polygon in slide.nested]
            mimics = [path for paths in found.values() for path in paths]
            entry: dict = {"slide": row.slide, "class": row.lesion_class or "negative", "layers": []}
            for index, layer in enumerate(model.layers):
                if index == 0:
                    roots = out.root_rois[j:j + 1]
                    parents = reader.read(roots, size)[None].float()  # (1, 1, 3, V, V)
                    boxes = roi_to_level0_box(roots, reader.slide_size)
                else:
                    parents = out.patches[index - 1][j:j + 1].float()
                    boxes = out.boxes_level0[index - 1][j]
                scores = out.scores[index + 1][j].float()  # (N_p * K, V, V)
                masks = layer.layout.view_masks(parents)[0]  # each head's strip, (N_p * K, V, V)
                flat = parents[0]
                tissue_of = tissue_pixels(flat, GREY_THRESHOLD)  # (N_p, V, V)
                smooth = gaussian_blur(flat, sigma)
                bright = smooth.mean(1)
                contrast = (smooth - gaussian_blur(smooth, sigma)).mean(1)  # blur(I - blur(I))
                heads = layer.num_heads_per_parent
                pooled: dict[str, list[np.ndarray]] = {key: [] for key in ("labels", *SCORES)}
                for n, box in enumerate(boxes.double().cpu().numpy()):
                    labels = pixel_labels(box, size, lesions, mimics, tissue_of[n].cpu().numpy(), nested)
                    for k in range(heads):
                        inside = masks[n * heads + k].cpu().numpy()
                        pooled["labels"].append(labels[inside])
                        pooled["heads"].append(scores[n * heads + k].cpu().numpy()[inside])
                        pooled["brightness"].append(bright[n].cpu().numpy()[inside])
                        pooled["contrast"].append(contrast[n].cpu().numpy()[inside])
                labels = np.concatenate(pooled["labels"])
                um_per_px = float((boxes[:, 2] - boxes[:, 0]).mean()) * mpp / size
                counts = {k: int((labels == k).sum())
                          for k in ("lesion", "lesion+nests", "lookalike", "lookalike+nests", "tissue")}
                layer_entry = {"um_per_px": um_per_px, "pixels": counts}
                for score in SCORES:
                    values = np.concatenate(pooled[score])
                    for name, (positive, negative) in CONTRASTS.items():
                        layer_entry[f"{score}:{name}"] = slide_auroc(values, labels, positive, negative)
                entry["layers"].append(layer_entry)
            results.append(entry)
        pool.close()
        if (start // batch) % 10 == 0:
            print(f"{checkpoint}: {start + len(chunk)}/{len(rows)} slides, {time.perf_counter() - t0:.0f} s",
                  flush=True)
    return results


def summarise(results: list[dict], replicates: int = 2000, seed: int = 0) -> dict:
    """Mean over slides (95 % bootstrap interval over slides) of each layer's AUROCs, slides counted."""
    rng = np.random.default_rng(seed)
    table: dict = {}
    for index in range(len(results[0]["layers"])):
        row: dict = {"um_per_px": float(np.mean([r["layers"][index]["um_per_px"] for r in results]))}
        for score in SCORES:
            for name in CONTRASTS:
                values = np.array([v for r in results
                                   if (v := r["layers"][index][f"{score}:{name}"]) is not None])
                if not len(values):
                    continue
                means = rng.choice(values, (replicates, len(values))).mean(1)
                row[f"{score}:{name}"] = (float(values.mean()), float(np.quantile(means, 0.025)),
                                          float(np.quantile(means, 0.975)), len(values))
        table[f"layer {index + 1}"] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH; repeatable")
    parser.add_argument("--test", type=Path, required=True, help="manifest whose test split is measured")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        cache = args.out / f"{name}.json"
        if cache.exists():
            results = json.loads(cache.read_text())
        else:
            results = measure(Path(path), args.test, args.batch)
            cache.write_text(json.dumps(results))
        report[name] = summarise(results)
        print(f"\n## {name} ({path}): mean per-slide AUROC (95 % interval; slides)")
        header = [f"{score}: {contrast}" for score in SCORES for contrast in CONTRASTS]
        print("| layer | µm/px | " + " | ".join(header) + " |\n|---|---|" + "---|" * len(header))
        for layer, row in report[name].items():
            cells = [f"{v[0]:.2f} ({v[1]:.2f}–{v[2]:.2f}; {v[3]})" if (v := row.get(key.replace(": ", ":")))
                     else "-" for key in header]
            print(f"| {layer} | {row['um_per_px']:.1f} | " + " | ".join(cells) + " |")
    (args.out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
