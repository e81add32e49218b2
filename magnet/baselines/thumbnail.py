"""The thumbnail baseline: a small CNN that sees only the whole slide at ``S x S`` and the slide label.

The control for "does this data set demand magnification at all?". If a from-scratch CNN on one view of
the whole slide (no zoom) separates tumour from normal slides, a zooming model's AUROC says little about
zooming; on Camelyon a 224² thumbnail shows at best the largest macro-metastases, and the paper's case
for magnification rests on that.

- **View.** Each slide's whole view through ``RegionReader`` (``SlidePool``), exactly as the model reads its
  root: the identity ROI (the slide centred on its black square canvas), ``S x S`` output, the grey filter
  on (paper §4.2, docs/method.md §2.8: glass turns black). ``S`` is 224 or 1024 in our benchmarks; any
  size >= 16 works. Views are kept in memory as uint8 (the reader's floats are multiples of 1/255, so
  this is lossless), and on disk only when a cache folder is given.
- **Network.** ``build_backbone("small")`` (four stride-2 conv stages, 16-32-64-64 channels, global max
  pooling) and a linear head. For ``S > 256`` [choice] a patchify stem (4x4 convolution, stride 4, 16
  channels, as in Liu et al., "A ConvNet for the 2020s") goes in front and the first stage takes its 16
  channels: without it the small CNN's receptive field (31 px) would cover 3 % of a 1024² view and a pass
  would cost 20x the multiply-adds of a 224² one (0.9 s per slide and step on 2 CPU cores); with it, about
  3x the multiply-adds (5-6x the time: the 256² stem maps are memory-bound).
- **Training.** From scratch, slide labels only: binary cross-entropy, Adam (Kingma & Ba), a fixed number
  of epochs, one of the 8 dihedral maps drawn per sample and epoch (flips and 90° rotations: a slide has no
  orientation). Every draw derives from ``(seed, epoch)``, so a fixed seed gives the same probabilities at
  the same torch thread count.
- **Selection and scoring.** The epoch with the best validation AUROC (ties: lower validation loss; with
  no usable validation split, the last epoch) is scored on the test rows with ``table1``: Macro, Micro,
  ITC, Macro & Micro, All, each with a 95 % bootstrap interval.

A slide that fails to open or read is logged, listed in the result's ``skipped`` and left out; it never
stops the run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch import Tensor, nn

from magnet.atomic import atomic_path
from magnet.baselines.selection import BestEpoch
from magnet.data.manifest import Manifest, ManifestRow
from magnet.domains import NON_NEGATIVE, POSITIVE, SEED, AtLeast, check_domains
from magnet.errors import MagnetError
from magnet.metrics.auroc import table1
from magnet.models.backbones import build_backbone
from magnet.slides.pool import SlidePool

__all__ = [
    "SlideViews",
    "ThumbnailConfig",
    "ThumbnailNet",
    "ThumbnailResult",
    "dihedral_batch",
    "read_views",
    "run_thumbnail",
    "train_thumbnail",
    "views_by_slide",
]

log = logging.getLogger(__name__)

# Above this size the patchify stem goes in front of the small CNN (see the module docstring).
STEM_ABOVE = 256


@dataclass(frozen=True)
class ThumbnailConfig:
    """The baseline's recipe; every default with its reason."""

    #: View side in pixels. 224: the classic CNN input and the earlier ad-hoc control; 1024 shows what
    #: 20x more pixels of the same whole view add.
    size: Annotated[int, AtLeast(16)] = 224  # the small CNN needs at least 16 px
    #: Fixed epoch budget: 12 fits the 2-core benchmark machine (about 20 s per 224² epoch and 2 min per
    #: 1024² epoch on 420 slides). A budget, not convergence: on the 600-slide virtual set one 224² seed of
    #: two still improved at epoch 12 (docs/BENCHMARKS.md, "Thumbnail baseline").
    epochs: Annotated[int, AtLeast(1)] = 12
    #: 16 slides per step: ~26 steps per epoch on 420 slides, and enough for batch norm's statistics.
    batch_size: Annotated[int, AtLeast(2)] = 16  # batch norm needs two samples
    #: Adam's default step size; the network is small and trained from scratch.
    lr: Annotated[float, POSITIVE] = 1e-3
    #: No weight decay: the fixed budget and validation selection are the regularisers.
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    #: Dihedral augmentation on: a slide has no orientation, and it multiplies the 420 views by 8.
    augment: bool = True
    #: Seeds the initial weights, the order of the slides and the augmentation.
    seed: Annotated[int, SEED] = 0
    #: The grey filter as the model reads (paper §4.2); off only for ablations.
    grey_filter: bool = True
    #: Reader threads per slide (the project's machines have 2 cores).
    threads: Annotated[int, AtLeast(1)] = 2
    #: Slides scored per forward pass at evaluation (memory: 64 x 3 x 1024² floats is 0.8 GB).
    eval_batch_size: Annotated[int, AtLeast(1)] = 32
    #: Bootstrap replicates of ``table1``'s intervals (its default; 0: no intervals).
    n_bootstrap: Annotated[int, NON_NEGATIVE] = 1000
    #: Folder for the views as ``.npy`` files, reused across runs; ``None``: memory only.
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_domains(self)


@dataclass
class SlideViews:
    """Whole-slide views of the slides that could be read, in input order."""

    specs: list[str]  #: slide paths / URIs that were read
    images: Tensor  #: ``(N, 3, S, S)`` uint8
    kept: list[int] = field(default_factory=list)  #: their indices in the input
    skipped: list[tuple[str, str]] = field(default_factory=list)  #: ``(slide, reason)`` of slides left out


def _cache_file(cache_dir: str | os.PathLike[str], spec: str, size: int, grey_filter: bool) -> Path:
    key = hashlib.sha1(f"{spec}|{size}|{int(grey_filter)}".encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{key}.npy"


def read_views(
    specs: Sequence[str],
    sizes: Sequence[int] | int,
    *,
    grey_filter: bool = True,
    threads: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, SlideViews]:
    """Read each slide's whole view (identity ROI) at every size in ``sizes``, one opening per slide.

    A slide that fails (to open, to read, or a view of the wrong shape) is logged and left out of every
    size, with its reason in ``skipped``. Views are uint8 ``(3, S, S)``; with ``cache_dir`` each is also
    stored there and read back on the next call (keyed by slide path or URI, size and filter: delete the
    folder when a slide file changes). ``progress(done, total)`` is called after every slide.
    """
    size_list = [sizes] if isinstance(sizes, int) else list(dict.fromkeys(sizes))
    identity = torch.eye(3).unsqueeze(0)
    # Filled in place (not a list stacked at the end): at 1024² a cohort's views are gigabytes.
    per_size = {s: np.empty((len(specs), 3, s, s), np.uint8) for s in size_list}
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    pool = SlidePool(grey_filter=grey_filter, threads=threads, max_open=2)
    try:
        for index, spec in enumerate(specs):
            try:
                views = {}
                for size in size_list:
                    path = _cache_file(cache_dir, spec, size, grey_filter) if cache_dir else None
                    if path is not None and path.is_file():
                        views[size] = np.load(path)
                        continue
                    image = pool.get(spec).read(identity, size)[0]
                    view = torch.round(image * 255.0).to(torch.uint8).numpy()
                    if view.shape != (3, size, size):
                        raise MagnetError(f"view of shape {view.shape}, expected {(3, size, size)}")
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                            np.save(handle, view)
                    views[size] = view
            except Exception as error:  # any failure of one slide: report it, go on with the others
                reason = f"{type(error).__name__}: {error}"
                log.warning("thumbnail baseline: slide %s left out (%s)", spec, reason)
                skipped.append((spec, reason))
            else:
                for size in size_list:
                    per_size[size][len(kept)] = views[size]
                kept.append(index)
            if progress is not None:
                progress(index + 1, len(specs))
    finally:
        pool.close()
    return {
        size: SlideViews(
            specs=[specs[i] for i in kept],
            images=torch.from_numpy(per_size[size][: len(kept)]),
            kept=list(kept),
            skipped=list(skipped),
        )
        for size in size_list
    }


class ThumbnailNet(nn.Module):
    """``build_backbone("small")`` + a linear head; a patchify stem in front above 256 px."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.backbone = build_backbone("small")
        if size > STEM_ABOVE:
            encoder = self.backbone.encoder
            assert isinstance(encoder, nn.Sequential)
            first = encoder[0]
            assert isinstance(first, nn.Conv2d)
            stem = [nn.Conv2d(3, 16, 4, stride=4, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
            encoder[0] = nn.Conv2d(16, first.out_channels, 3, stride=2, padding=1, bias=False)
            self.backbone.encoder = nn.Sequential(*stem, *encoder)
        self.head = nn.Linear(self.backbone.feature_dim, 1)

    def forward(self, images: Tensor) -> Tensor:
        """Images ``(N, 3, S, S)`` in ``[0, 1]`` to logits ``(N,)``."""
        logits: Tensor = self.head(self.backbone(images)).squeeze(1)
        return logits


def dihedral_batch(images: Tensor, maps: Sequence[int]) -> Tensor:
    """Apply dihedral map ``maps[i]`` (0..7: ``i % 4`` quarter turns, then a left-right flip if >= 4)."""
    out = []
    for image, k in zip(images, maps, strict=True):
        turned = torch.rot90(image, int(k) % 4, dims=(1, 2))
        out.append(turned.flip(2) if k >= 4 else turned)
    return torch.stack(out) if out else images


def _predict(model: ThumbnailNet, images: Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits.append(model(images[start : start + batch_size].float().div_(255.0)))
    return torch.cat(logits).numpy().astype(np.float64) if logits else np.zeros(0)


@dataclass
class TrainedThumbnail:
    model: ThumbnailNet
    best_epoch: int
    history: list[dict[str, float | None]]


def train_thumbnail(
    train_images: Tensor,
    train_labels: Sequence[int] | np.ndarray,
    val_images: Tensor | None,
    val_labels: Sequence[int] | np.ndarray | None,
    config: ThumbnailConfig,
    *,
    progress: Callable[[dict[str, float | None]], None] | None = None,
) -> TrainedThumbnail:
    """Train on uint8 views ``(N, 3, S, S)``; keep the epoch with the best validation AUROC."""
    y = np.asarray(train_labels, dtype=np.float32).reshape(-1)
    if len(y) != len(train_images) or len(np.unique(y)) < 2:
        raise MagnetError(
            f"thumbnail baseline: needs positive and negative training slides ({len(train_images)} views, "
            f"{int(y.sum())} positive)"
        )
    y_val = np.asarray(val_labels if val_labels is not None and val_images is not None else [], np.float64)
    if val_images is not None and len(val_images) != len(y_val):
        raise ValueError(f"{len(val_images)} validation views but {len(y_val)} labels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ThumbnailNet(config.size)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    targets = torch.from_numpy(y)
    best = BestEpoch(model, y_val, config.epochs)
    history: list[dict[str, float | None]] = []
    for epoch in range(1, config.epochs + 1):
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(y))
        maps = rng.integers(0, 8, len(y)) if config.augment else np.zeros(len(y), dtype=np.int64)
        model.train()
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:  # batch norm needs two samples
                continue
            images = dihedral_batch(train_images[batch], maps[batch].tolist()).float().div_(255.0)
            loss = loss_fn(model(images), targets[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        row: dict[str, float | None] = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                                        "val_auroc": None, "val_loss": None}
        if best.usable:
            assert val_images is not None
            row.update(best.offer(epoch, _predict(model, val_images, config.eval_batch_size)))
        history.append(row)
        if progress is not None:
            progress(row)
    best.restore()
    return TrainedThumbnail(model, best.epoch, history)


@dataclass
class ThumbnailResult:
    """The baseline's test scores: ``metrics`` is ``table1``'s JSON-ready dict."""

    size: int
    metrics: dict[str, Any]
    test_rows: list[ManifestRow]
    probabilities: np.ndarray
    best_epoch: int
    history: list[dict[str, float | None]]
    skipped: list[tuple[str, str]]
    minutes_read: float
    minutes_train: float

    def summary(self) -> dict[str, Any]:
        """JSON-ready: metrics, selection, history, slides left out, minutes."""
        return {
            "size": self.size, "metrics": self.metrics, "best_epoch": self.best_epoch,
            "history": self.history, "skipped": [list(s) for s in self.skipped],
            "minutes_read": self.minutes_read, "minutes_train": self.minutes_train,
        }


def _rows(manifest: Manifest | Sequence[ManifestRow]) -> list[ManifestRow]:
    return list(manifest.rows if isinstance(manifest, Manifest) else manifest)


def run_thumbnail(
    manifest: Manifest | Sequence[ManifestRow],
    config: ThumbnailConfig | None = None,
    *,
    test: Manifest | Sequence[ManifestRow] | None = None,
    views: dict[str, np.ndarray] | None = None,
    progress: Callable[[dict[str, float | None]], None] | None = None,
) -> ThumbnailResult:
    """Train on ``manifest``'s train split, select on its validation split, score the test rows.

    The test rows are every row of ``test`` when given, else ``manifest``'s test split. ``views`` maps a
    slide to its uint8 ``(3, S, S)`` view (read once for several runs, e.g. by ``views_by_slide``); slides
    missing from it are read here.
    """
    cfg = config or ThumbnailConfig()
    rows = _rows(manifest)
    groups = {
        "train": [r for r in rows if r.split == "train"],
        "validation": [r for r in rows if r.split == "validation"],
        "test": _rows(test) if test is not None else [r for r in rows if r.split == "test"],
    }
    if not groups["train"] or not groups["test"]:
        raise MagnetError(
            f"thumbnail baseline: {len(groups['train'])} training and {len(groups['test'])} test rows; "
            "both must be non-empty"
        )
    start = time.perf_counter()
    known = dict(views or {})
    missing = [r.slide for g in groups.values() for r in g if r.slide not in known]
    read = read_views(list(dict.fromkeys(missing)), cfg.size, grey_filter=cfg.grey_filter,
                      threads=cfg.threads, cache_dir=cfg.cache_dir)[cfg.size]
    known.update({spec: image.numpy() for spec, image in zip(read.specs, read.images, strict=True)})
    minutes_read = (time.perf_counter() - start) / 60

    def stack(group: list[ManifestRow]) -> tuple[Tensor, list[ManifestRow]]:
        present = [r for r in group if r.slide in known]
        if not present:
            return torch.zeros((0, 3, cfg.size, cfg.size), dtype=torch.uint8), []
        return torch.from_numpy(np.stack([known[r.slide] for r in present])), present

    (x_train, r_train), (x_val, r_val), (x_test, r_test) = (stack(groups[k]) for k in groups)
    if not r_test:
        raise MagnetError("thumbnail baseline: no test slide could be read")
    start = time.perf_counter()
    trained = train_thumbnail(x_train, [r.label for r in r_train], x_val, [r.label for r in r_val], cfg,
                              progress=progress)
    logits = _predict(trained.model, x_test, cfg.eval_batch_size)
    minutes_train = (time.perf_counter() - start) / 60
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    metrics = table1([r.label for r in r_test], probabilities, [r.lesion_class for r in r_test],
                     n_bootstrap=cfg.n_bootstrap)
    return ThumbnailResult(cfg.size, metrics, r_test, probabilities, trained.best_epoch, trained.history,
                           list(read.skipped), minutes_read, minutes_train)


def views_by_slide(views: SlideViews) -> dict[str, np.ndarray]:
    """``read_views``' result of one size as the ``views`` argument of ``run_thumbnail``."""
    return {spec: image.numpy() for spec, image in zip(views.specs, views.images, strict=True)}
