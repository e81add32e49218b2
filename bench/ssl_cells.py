"""A self-supervised cell encoder against ImageNet's, as the "what" a readout over cells learns from labels.

A readout refitted from slide labels over the 32-um cells of frozen ImageNet EfficientNet-Lite0 maps scores
isolated tumour cells (ITC) at 0.86 when every patch is a 1-um look centred on a lesion-like spot (the
oracle blind among candidates), and the same features hold no label-free signal: a cell's distance to the
negative slides' cells ranks ITC slides at chance (docs/BENCHMARKS.md, "Which half fails on ITC"). This
bench asks whether an encoder pre-trained on the slides' own cells, with no label, does better on either.

Stages (each cached in ``--out``):

1. ``looks``: every slide's looks, read at the ``--start`` run's final size through the oracle's ROIs
   (``--set`` as ``magnet train --set``; the blind oracle by default, 221-um looks at 1 um/px), kept as
   8-bit pixels beside the run's CNN maps (``NAME-SPLIT.pt``); ``--splits`` reads some splits and stops;
2. ``encoder``: a small CNN trained by contrastive learning (SimCLR's normalised-temperature cross-entropy,
   Chen et al. 2020, eq. 1) on pairs of 32-px crops of the training split's looks: two crops whose corners
   lie within ``--shift`` px of each other, each flipped, turned and colour-jittered at random, are the
   positive pair, every other crop of the batch a negative. No label is read (``NAME-encoder.pt``). The
   encoder and its trainer are the library's (``magnet.models.cell_encoder``, ``magnet.training.contrastive``,
   what ``magnet pretrain`` runs on a recipe's patches);
3. ``compare``: per cell (a 32-px square, as the Lite0 map's cells), the ImageNet features and the
   encoder's (its map, a quarter of the look's side, averaged in 8-px squares) are read out two ways with one
   procedure each: a readout over cells refitted from slide labels (a linear score per standardised cell,
   the slide's log-mean-exp of its cells, Adam; the epoch, learning rate and sharpness of the best
   validation AUROC kept; ``--heads mlp``: the paper's FC 512-256-1 head from a random start), and a
   label-free novelty score (a cell's mean distance to its ``--k`` nearest cells of the negative training
   slides, the slide's ``--top`` highest mean; only the negatives' labels are read). Writes
   ``NAME-FEATURES-READOUT.csv`` test predictions and prints Table 1's AUROCs per class. ``--features``:
   the encoder's, ImageNet's, or ``both`` side by side per cell.

The looks need not be the oracle's: ``--start`` a trained tree with ``--set model.final_size=448`` reads
that tree's own final boxes at 1 um/px (as ``bench/cell_readout.py`` with the same ``--set``), and the
encoder then learns from the training split's boxes.

    cd bench; ../.venv/bin/python ssl_cells.py --out /tmp/ssl --name cand \\
        --start FIXED/best-trained.ckpt --data /tmp/avp4/data/manifest.csv --test /tmp/avp4/test/manifest.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cell_readout import load_run, metrics_line, oracle_for, write_predictions
from torch import Tensor, nn

from magnet.data.manifest import read_manifest
from magnet.metrics.auroc import auroc
from magnet.models.cell_encoder import CellEncoder, load_encoder_weights
from magnet.slides.pool import SlidePool
from magnet.training.contrastive import ContrastiveSettings, train_cell_encoder
from magnet.training.pretrain import write_encoder_file

BLIND_ORACLE = (
    "model.zoom=oracle",
    "model.oracle_negatives=lookalikes",
    "model.oracle_positives=candidates",
    "model.oracle_side=0.027",
)
# (Adam's learning rate, log-mean-exp sharpness) of the readout over cells, chosen per feature set on the
# validation slides: a fresh linear head on 1280 ImageNet features and on 128 encoder features learn at
# different rates.
READOUT_GRID = {
    "linear": ((1e-2, 1.0), (1e-2, 5.0), (1e-3, 1.0), (1e-3, 5.0)),
    "mlp": ((1e-3, 1.0), (1e-3, 5.0)),  # 3 minutes a fit on the encoder's cells; ImageNet's too slow here
}


def read_looks(args: argparse.Namespace, split: str) -> dict:
    """One split's looks: pixels (uint8) and the ``--start`` run's CNN maps (float16), with labels."""
    path = args.out / f"{args.name}-{split}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)  # type: ignore[no-any-return]
    t0 = time.perf_counter()
    manifest = args.test if split == "test" else args.data
    model, config = load_run(args.start, "cells", overrides=args.set)
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == split]
    oracle = oracle_for(model, config, rows, manifest)  # None: the tree's own boxes (e.g. final_size=448)
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1, max_open=4)
    count = model.config.patches_at(model.config.num_layers)
    slides = []
    with torch.no_grad():
        for row in rows:  # one slide at a time: a bad slide stops the bench (the sets are ours)
            readers = [pool.get(row.slide)]
            rois = None if oracle is None else oracle.rois([row.slide], readers, count)
            patches = model.final_patches(readers, final_rois=rois).patches[-1]
            maps = model.classifier.features(patches)[0]
            pixels = (patches[0].clamp(0, 1) * 255).round().to(torch.uint8)
            slides.append(
                {
                    "slide": row.slide,
                    "split": split,
                    "label": row.label,
                    "class": row.lesion_class or "negative",
                    "maps": maps.half(),
                    "pixels": pixels,
                }
            )
    pool.close()
    result = {"slides": slides, "checkpoint": str(args.start), "overrides": list(args.set)}
    torch.save(result, path)
    print(f"{path.stem}: {len(rows)} slides, {time.perf_counter() - t0:.0f} s", flush=True)
    return result


def train_encoder(args: argparse.Namespace, train: list[dict]) -> CellEncoder:
    """The encoder trained on crops of the ``train`` slides' looks (no label read; the library's
    ``magnet pretrain`` trainer), or the one cached."""
    path = args.out / f"{args.name}-encoder.pt"  # the file magnet pretrain writes (model.backbone_weights)
    if path.exists():
        encoder = CellEncoder()
        load_encoder_weights(encoder, path)
        return encoder.eval()
    looks = torch.cat([s["pixels"] for s in train])  # (N, 3, side, side) uint8; no label read
    settings = ContrastiveSettings(steps=args.steps, batch=args.batch, shift=args.shift, lr=args.lr,
                                   temperature=args.temperature, seed=args.seed)
    encoder, _ = train_cell_encoder(looks, settings, echo=lambda line: print(line, flush=True))
    write_encoder_file(encoder, path, patch_px=int(looks.shape[-1]), slides=len(train), settings=settings)
    return encoder


def as_cells(maps: Tensor) -> Tensor:
    """``(looks, D, h, w)`` maps to ``(looks * h * w, D)`` cells, in the maps' order (look, row, column)."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


@torch.no_grad()
def encoder_cells(encoder: CellEncoder, slides: list[dict]) -> Tensor:
    """``(S, cells, width)``: the encoder's features of every cell of every look of each slide."""
    return torch.stack([as_cells(encoder.feature_map(s["pixels"].float() / 255)) for s in slides])


def lite0_cells(slides: list[dict]) -> Tensor:
    """``(S, cells, 1280)``: the cached ImageNet maps' cells, in ``encoder_cells``' order (stacked in float16,
    then widened once: the boxes' maps are large)."""
    return torch.stack([as_cells(s["maps"]) for s in slides]).float()


def fit_readout(
    train: Tensor,
    train_y: Tensor,
    val: Tensor,
    val_y: Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-2,
    sharpness: float = 5.0,
    kind: str = "linear",
) -> tuple[nn.Module, float]:
    """A score per cell (``kind``: linear, or the paper's FC 512-256-1 head), the slide's log-mean-exp of its
    cells; the epoch of best validation AUROC."""
    torch.manual_seed(seed)
    width = train.shape[-1]
    if kind == "mlp":
        head: nn.Module = nn.Sequential(
            nn.Linear(width, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1)
        )
    else:  # zeros: every cell weighs alike at first, so the first step follows the mean cell's difference
        head = nn.Linear(width, 1)  # between the classes, not a random start's favourite cells
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    optimiser = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    best, state = -1.0, None
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(train), generator=generator).split(16):
            loss = F.binary_cross_entropy_with_logits(
                slide_logits(head, train[batch], sharpness), train_y[batch]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            score = auroc(val_y.numpy(), slide_logits(head, val, sharpness).numpy())
        if score > best:
            best, state = score, {k: v.clone() for k, v in head.state_dict().items()}
    assert state is not None
    head.load_state_dict(state)
    return head, best


def slide_logits(head: nn.Module, cells: Tensor, sharpness: float) -> Tensor:
    scores = head(cells).squeeze(-1)  # (S, cells)
    return (torch.logsumexp(sharpness * scores, dim=1) - np.log(scores.shape[1])) / sharpness


def novelty(reference: Tensor, cells: Tensor, k: int, top: int) -> Tensor:
    """Per slide, the mean of its ``top`` cells' mean distances to their ``k`` nearest ``reference`` cells."""
    scores = []
    for slide in cells:
        distance = torch.cdist(slide, reference).topk(k, dim=1, largest=False).values.mean(1)
        scores.append(distance.topk(top).values.mean())
    return torch.stack(scores)


def compare(
    args: argparse.Namespace, name: str, cells: dict[str, Tensor], slides: dict[str, list[dict]]
) -> None:
    labels = {split: torch.tensor([float(s["label"]) for s in slides[split]]) for split in slides}
    mean = cells["train"].mean((0, 1))
    std = cells["train"].std((0, 1)) + 1e-6
    z = {split: cells[split].sub_(mean).div_(std) for split in cells}  # in place: the box maps are large
    test = slides["test"]
    classes, test_labels = [s["class"] for s in test], [s["label"] for s in test]
    for kind in args.heads:
        t0 = time.perf_counter()
        fits = []  # (validation AUROC, lr, sharpness, head): the pair chosen on validation, never on test
        for lr, sharpness in READOUT_GRID[kind]:
            head, val = fit_readout(
                z["train"],
                labels["train"],
                z["validation"],
                labels["validation"],
                epochs=args.epochs,
                seed=args.seed,
                lr=lr,
                sharpness=sharpness,
                kind=kind,
            )
            fits.append((val, lr, sharpness, head))
        val, lr, sharpness, head = max(fits, key=lambda fit: fit[0])
        with torch.no_grad():
            logits = slide_logits(head, z["test"], sharpness).tolist()
        suffix = "readout" if kind == "linear" else f"readout-{kind}"
        write_predictions(args.out / f"{args.name}-{name}-{suffix}.csv", test, logits)
        tried = ", ".join(f"{f[1]:g}/{f[2]:g}: {f[0]:.3f}" for f in fits)
        print(
            f"{name} {kind} readout (validation by lr/sharpness {tried}; {time.perf_counter() - t0:.0f} s), "
            f"lr {lr:g}, sharpness {sharpness:g}: {metrics_line(test_labels, logits, classes)}",
            flush=True,
        )
    if args.reference == 0:
        return
    negatives = z["train"][labels["train"] == 0].reshape(-1, z["train"].shape[-1])
    generator = torch.Generator().manual_seed(args.seed)
    reference = negatives[torch.randperm(len(negatives), generator=generator)[: args.reference]]
    scores = novelty(reference, z["test"], args.k, args.top).tolist()
    write_predictions(args.out / f"{args.name}-{name}-novelty.csv", test, scores)
    print(
        f"{name} novelty (k {args.k}, top {args.top}): {metrics_line(test_labels, scores, classes)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--start", type=Path, required=True, help="the run whose CNN and final size read the looks"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="manifest with the train and validation splits"
    )
    parser.add_argument("--test", type=Path, required=True, help="manifest with the test split")
    parser.add_argument("--set", nargs="+", default=list(BLIND_ORACLE), metavar="KEY=VALUE")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["train", "validation", "test"],
        help="read these splits' looks only and stop (two processes side by side)",
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--shift", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument(
        "--reference",
        type=int,
        default=20000,
        help="negative cells the novelty score compares with (0: none)",
    )
    parser.add_argument("--heads", nargs="+", default=["linear"], choices=sorted(READOUT_GRID))
    parser.add_argument(
        "--features",
        nargs="+",
        default=["encoder", "imagenet"],
        choices=["encoder", "both", "imagenet"],
        help="both: each cell's encoder and ImageNet features side by side",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    slides = {split: read_looks(args, split)["slides"] for split in args.splits}
    if len(slides) < 3:
        return
    encoder = train_encoder(args, slides["train"])
    wants_encoder = {"encoder", "both"} & set(args.features)
    cells = {split: encoder_cells(encoder, s) for split, s in slides.items()} if wants_encoder else {}
    for split in slides.values():  # the pixels are read; free them before the ImageNet maps grow to float32
        for slide in split:
            del slide["pixels"]
    if "encoder" in args.features:
        compare(args, "encoder", cells, slides)  # standardises in place: "both" standardises again, alike
    if "both" in args.features:  # each cell's encoder channels beside its ImageNet ones
        compare(
            args,
            "both",
            {split: torch.cat([cells[split], lite0_cells(s)], -1) for split, s in slides.items()},
            slides,
        )
    if "imagenet" in args.features:
        compare(args, "imagenet", {split: lite0_cells(s) for split, s in slides.items()}, slides)


if __name__ == "__main__":
    main()
