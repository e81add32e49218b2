"""Readout probe: with a trained MagNet's "where" held fixed, how much "what" do its final patches hold?

A MagNet's accuracy is bounded twice: by where its final patches go (the zoom) and by what its classifier
reads in them. This bench separates the two. It runs a trained checkpoint in evaluation mode over a train,
a validation and a test manifest, keeps the frozen classifier CNN's **spatial** feature maps of every final
patch (EfficientNet-Lite0: 1280 channels on a 7 x 7 grid at 224 px, each cell about 64 um at 2 um/px), and
then fits several readouts on those cached features, each selected on the validation slides and scored on
the test slides:

- ``patch-lse``: the model's own readout refitted: features averaged over the patch, the classifier's
  FC 512 -> FC 256 -> 1 per patch, log-mean-exp over patches (docs/method.md §9, ``readout: lse``);
- ``cell-lse`` / ``cell-max``: the same head on every cell of every patch, pooled over all cells: a lesion
  that fills one or two of a patch's 49 cells is not averaged away;
- ``patch-attention`` / ``cell-attention``: gated attention MIL (Ilse et al. 2018; the tiling baseline's
  ``magnet.baselines.tiling.mil.GatedAttentionMIL``) over patches or over cells.

It also splits each positive class by whether a final patch at <= 2 um/px overlaps a lesion (the hit of
docs/method.md §7), so the AUROC of hit slides against negatives says how well a readout scores a lesion
that the zoom did reach.

    OMP_NUM_THREADS=1 .venv/bin/python bench/readout_probe.py --checkpoint RUN/best.ckpt \\
        --train /tmp/avp/data/manifest.csv --test /tmp/avp/test/manifest.csv --out /tmp/probe

Each readout starts from fresh weights, except ``patch-lse`` with ``--warm``: from the checkpoint's own head,
which is what ``refit.epochs`` (``magnet.training.readout_refit``) does inside a run. The features are
cached in ``--out`` on the first call, so later calls with other readouts or seeds only fit.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.baselines.tiling.mil import GatedAttentionMIL
from magnet.data.lesions import read_lesions
from magnet.data.manifest import read_manifest
from magnet.metrics.auroc import table1
from magnet.metrics.localisation import FINE_UM_PER_PX, slide_localisation
from magnet.models.efficientnet_lite import EfficientNetLite0
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import load_model

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")


def feature_maps(model, patches: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """``(B, N, 3, S, S)`` final patches to the classifier CNN's maps ``(B, N, C, h, w)`` (Lite0 only)."""
    classifier = model.classifier
    lite0 = classifier.backbone.encoder
    if not isinstance(lite0, EfficientNetLite0):
        raise SystemExit("readout_probe: the classifier CNN must be efficientnet_lite0")
    batch, count = patches.shape[:2]
    images = patches.flatten(0, 1)
    size = classifier.input_size
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)
    maps = lite0.feature_map(images)
    return maps.view(batch, count, *maps.shape[1:])


@torch.no_grad()
def extract(args: argparse.Namespace, manifest_path: Path, splits: set[str], name: str) -> None:
    path = args.out / f"{name}.pt"
    if path.exists():
        return
    model, config = load_model(args.checkpoint)
    torch.set_num_threads(args.threads)
    manifest = read_manifest(manifest_path, check_slides=False)
    rows = [r for r in manifest.rows if r.split in splits]
    lesions = read_lesions(manifest_path.parent / "lesions.json")
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    maps, labels, classes, probs, hits = [], [], [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(rows), args.batch):
        batch = rows[i:i + args.batch]
        readers = [pool.get(r.slide) for r in batch]
        out = model(readers, auxiliary=False)
        maps.append(feature_maps(model, out.patches[-1]).half())
        probs.extend(torch.sigmoid(out.logit).tolist())
        for row, reader, boxes in zip(batch, readers, out.boxes_level0[-1], strict=True):
            mpp = reader.slide.mpp[0] if reader.slide.mpp else 0.25
            fine = FINE_UM_PER_PX * model.config.final_size / mpp
            local = slide_localisation(boxes, reader.slide_size, lesions.get(row.slide, []), fine_side=fine)
            hits.append(bool(local.fine_hit))
            labels.append(row.label)
            classes.append(row.lesion_class or "negative")
        pool.close()
        print(f"{name}: {i + len(batch)}/{len(rows)} slides, {time.perf_counter() - t0:.0f} s", flush=True)
    torch.save({"maps": torch.cat(maps), "labels": labels, "classes": classes, "probs": probs,
                "hits": hits, "splits": [r.split for r in rows]}, path)


class CellHead(nn.Module):
    """The classifier's FC 512 -> FC 256 -> 1 on each instance, pooled by max or log-mean-exp."""

    def __init__(self, dim: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.head = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                  nn.Linear(256, 1))

    def forward(self, instances: Tensor) -> Tensor:  # (N, D) -> ()
        logits = self.head(instances).squeeze(-1)
        if self.pool == "max":
            return logits.max()
        return torch.logsumexp(logits, 0) - math.log(len(logits))


class AttentionHead(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mil = GatedAttentionMIL(dim)

    def forward(self, instances: Tensor) -> Tensor:
        return self.mil(instances)[0]


def instances(maps: Tensor, level: str) -> Tensor:
    """One slide's maps ``(N, C, h, w)`` to instances: patch means ``(N, C)`` or cells ``(N h w, C)``."""
    if level == "patch":
        return maps.float().mean(dim=(2, 3))
    return maps.float().permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def fit(readout: str, train: dict, val: dict, test: dict, args: argparse.Namespace, seed: int) -> dict:
    level, pool = readout.split("-")
    torch.manual_seed(seed)
    dim = train["maps"].shape[2]
    net: nn.Module = AttentionHead(dim) if pool == "attention" else CellHead(dim, pool)
    if args.warm and readout == "patch-lse":
        model, _ = load_model(args.checkpoint)
        net.head.load_state_dict(model.classifier.head.state_dict())
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=1e-4)
    labels = torch.tensor(train["labels"], dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)

    def scores(data: dict) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return np.array([float(net(instances(m, level))) for m in data["maps"]])

    best, best_state, t0 = -1.0, None, time.perf_counter()
    for _ in range(args.epochs):
        net.train()
        for i in torch.randperm(len(labels), generator=generator).tolist():
            loss = F.binary_cross_entropy_with_logits(net(instances(train["maps"][i], level)), labels[i])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        score = table1(val["labels"], scores(val), val["classes"], n_bootstrap=0)["all"]["auroc"]
        if score is not None and score > best:
            best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    net.load_state_dict(best_state)
    return {"scores": scores(test).tolist(), "val_all": best, "seconds": time.perf_counter() - t0}


def subset_metrics(data: dict, scores: np.ndarray) -> dict[str, float | None]:
    """AUROC of each positive class's hit slides, and of its missed slides, against all negatives."""
    result: dict[str, float | None] = {}
    classes, hits = np.array(data["classes"]), np.array(data["hits"])
    negative = classes == "negative"
    for lesion in ("micro", "itc"):
        for name, keep in (("hit", hits), ("miss", ~hits)):
            chosen = (classes == lesion) & keep
            if chosen.sum() == 0:
                result[f"{lesion}_{name}"] = None
                continue
            pos, neg = scores[chosen], scores[negative]
            greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
            result[f"{lesion}_{name}"] = float(greater)
            result[f"n_{lesion}_{name}"] = int(chosen.sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True, help="manifest with train and validation splits")
    parser.add_argument("--test", type=Path, required=True, help="manifest of the test slides")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--readouts", nargs="+",
                        default=["patch-lse", "cell-lse", "cell-max", "patch-attention", "cell-attention"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warm", action="store_true",
                        help="patch-lse starts from the checkpoint's own head (default: a fresh one)")
    parser.add_argument("--results", default="results.json", help="file name of the results, in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extract(args, args.train, {"train"}, "train")
    extract(args, args.train, {"validation"}, "val")
    extract(args, args.test, {"test"}, "test")
    train, val, test = (torch.load(args.out / f"{n}.pt") for n in ("train", "val", "test"))
    results = {"model": {**table1(test["labels"], test["probs"], test["classes"]),
                         **subset_metrics(test, np.array(test["probs"]))}}
    print("model", {c: round(results["model"][c]["auroc"], 3) for c in COLUMNS}, flush=True)
    for readout in args.readouts:
        for seed in args.seeds:
            fitted = fit(readout, train, val, test, args, seed)
            scores = np.array(fitted["scores"])
            row = {**table1(test["labels"], scores, test["classes"]), **subset_metrics(test, scores),
                   "val_all": fitted["val_all"], "seconds": fitted["seconds"]}
            results[f"{readout}-seed{seed}"] = row
            print(readout, seed, {c: round(row[c]["auroc"], 3) for c in COLUMNS},
                  {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                   if k.startswith(("micro_", "itc_"))}, f"{fitted['seconds']:.0f} s", flush=True)
            (args.out / args.results).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
