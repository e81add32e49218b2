"""Readout refit [choice, docs/method.md §9]: the classifier's readout fitted again, the zoom held as trained.

A MagNet's slide logit is its readout (GRU or pooled per-patch head, paper §3.2) applied to the CNN features
of the final patches. Training moves the zoom and the readout together for a few epochs, and on a CPU
budget that is a few dozen optimiser steps for the readout: too few. After training, the zoom of the best
checkpoint is fixed (evaluation mode: identity view, no sampler noise), so each slide's final patches, and
their CNN features, are fixed too. This stage computes those features once per training and validation
slide, then fits the readout (every classifier parameter after the CNN) on them for ``refit.epochs``
epochs of one slide per Adam step, starting from the trained readout, and keeps the epoch with the best
validation AUROC. The trained readout (epoch 0) is not a candidate unless ``refit.trained_competes``: its
checkpoint was already chosen for its AUROC on the same validation slides (best of the training epochs),
so that score is biased upwards, and on small validation sets it won where the test set then preferred
every refit pass (docs/BENCHMARKS.md, "Which refit pass holds on the test set").
The CNN, the heads and the auxiliary classifiers are untouched. It is cheap: the features of a slide are
one evaluation forward pass, and an epoch over cached features takes about a second.

``refit.folds`` = K > 1 [choice] (``refit_readout_folds``): the training and validation slides are pooled
and split into K folds stratified by label; K refits start from the trained readout, each fitted on K - 1
folds and keeping its pass by AUROC on the remaining one, and the readout becomes the element-wise mean of
the K fitted readouts. Why: on 40 validation slides the choice of pass moves the test AUROC by +-0.04
between held-out splits of one run (docs/BENCHMARKS.md, "Which refit pass holds on the test set"); K
choices averaged, and every slide used for fitting, make the refit less a draw of its validation set.
Averaging the weights of models fine-tuned from one starting point is the "model soup" of Wortsman et al.
(ICML 2022); the K refits here start from the same trained readout and move little (Adam at 1e-4), which is
the case that paper found to average well. The validation AUROC it reports is the mean over the folds of
each fold's kept pass on its own held-out fold (the soup itself has no held-out slides left).

Why it is ours and not the paper's: the paper trains 200 epochs (§4.3), where the readout has every step it
needs. On virtual slides at 2 um/px, refitting the readout of a 3-epoch magnet3 run (frozen Lite0) on its
own final patches raised test Macro & Micro AUROC from 0.87 to 0.94 on one training seed (docs/BENCHMARKS.md,
"The readout refitted on the final patches"); where the earlier rule kept the trained readout, refitting
under this one raised it from 0.68 to 0.91 ("The refit without the trained readout as a candidate").

Caching features in evaluation mode is the tiling pipelines' practice (CLAM, Lu et al. 2021: features once
per tile, then attention MIL trained on them); here the "tiles" are the zoom's final patches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from magnet.data.manifest import ManifestRow
from magnet.errors import MagnetError, SlideError
from magnet.inference.draws import inference_batch_size, inference_generator
from magnet.inference.oracle import OracleZoom
from magnet.inference.runner import evaluation_mode
from magnet.metrics.auroc import auroc
from magnet.models.classifier import Classifier
from magnet.models.magnet import MagNet
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import (
    build_offline,
    checkpoint_config,
    config_dict,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from magnet.training.recipe import RefitConfig

__all__ = [
    "TRAINED_CHECKPOINT", "CachedFeatures", "RefitResult", "final_patch_features", "refit_readout",
    "refit_readout_folds", "refit_run", "stratified_folds",
]

# In a run folder: the best checkpoint as training left it, kept when the refit rewrites best.ckpt.
TRAINED_CHECKPOINT = "best-trained.ckpt"


@dataclass
class CachedFeatures:
    """What the readout reads of S slides' final patches (``Classifier.features``: ``(S, N, D)``, or cell maps
    ``(S, N, D, h, w)`` for a readout over cells) and their labels ``(S,)``."""

    features: Tensor
    labels: Tensor
    slides: list[str]
    skipped: dict[str, str]  # slide -> why it could not be read

    def subset(self, index: Sequence[int]) -> CachedFeatures:
        """The slides at ``index``, in that order."""
        chosen = torch.as_tensor(list(index), dtype=torch.long)
        return CachedFeatures(self.features[chosen], self.labels[chosen],
                              [self.slides[i] for i in index], {})

    @staticmethod
    def joined(first: CachedFeatures, second: CachedFeatures) -> CachedFeatures:
        """Both sets' slides, ``first``'s then ``second``'s."""
        return CachedFeatures(torch.cat([first.features, second.features]),
                              torch.cat([first.labels, second.labels]), first.slides + second.slides,
                              {**first.skipped, **second.skipped})


@dataclass
class RefitResult:
    epochs: int
    # 0: the trained readout kept (no epochs, or it competed and stayed best); -1: a soup of fold refits,
    # whose passes are ``fold_epochs``
    best_epoch: int
    val_auroc_before: float  # with folds: the mean over folds, on each fold's held-out slides
    val_auroc_after: float
    n_train: int  # with folds: every slide pooled, each fitted in K - 1 folds and held out in one
    n_validation: int
    seconds: float
    fold_epochs: list[int] = field(default_factory=list)  # the pass each fold kept (refit.folds > 1)

    def summary(self, checkpoint: str | Path) -> str:
        """One line for the user: the validation AUROC before and after, and where it was written."""
        if self.fold_epochs:
            return (f"readout refit: mean of {len(self.fold_epochs)} fold refits (passes "
                    f"{', '.join(map(str, self.fold_epochs))} of {self.epochs}), held-out AUROC "
                    f"{self.val_auroc_before:.3f} -> {self.val_auroc_after:.3f} per fold on average, "
                    f"{self.seconds:.0f} s, in {checkpoint}")
        lower = ("; below the trained readout's, whose score also chose its checkpoint "
                 "(refit.trained_competes)" if self.val_auroc_after < self.val_auroc_before else "")
        return (f"readout refit: validation AUROC {self.val_auroc_before:.3f} -> {self.val_auroc_after:.3f} "
                f"(epoch {self.best_epoch} of {self.epochs}, {self.seconds:.0f} s{lower}) in {checkpoint}")


@torch.no_grad()
def final_patch_features(model: MagNet, rows: Sequence[ManifestRow], pool: SlidePool, *, batch_size: int,
                         oracle: OracleZoom | None = None, seed: int = 0,
                         encode: Callable[[Tensor], Tensor] | None = None) -> CachedFeatures:
    """Each readable slide's final-patch features in evaluation mode (the zoom as at inference; a random
    zoom's boxes those of evaluation, from each slide's generator and the run's ``seed``): the classifier's
    ``features`` of its patches ``(B, N, 3, S, S)``, or what ``encode`` makes of them (concatenated on the
    first dimension).

    A slide that cannot be read is left out and named in ``skipped``; the others are unaffected.
    """
    encode = encode or (lambda patches: model.classifier.features(patches).float())
    features: list[Tensor] = []
    kept: list[ManifestRow] = []
    skipped: dict[str, str] = {}

    def read(group: list[ManifestRow]) -> None:
        readers = [pool.get(row.slide) for row in group]
        count = model.config.patches_at(model.config.num_layers)
        names = [row.slide for row in group]
        final = None if oracle is None else oracle.rois(names, readers, count)
        generator = inference_generator(model, names, seed)
        patches = model.final_patches(readers, generator=generator, final_rois=final).patches[-1]
        features.append(encode(patches).cpu())
        kept.extend(group)

    batch_size = inference_batch_size(model, batch_size)
    with evaluation_mode(model):
        for start in range(0, len(rows), batch_size):
            batch = list(rows[start:start + batch_size])
            try:
                read(batch)
            except SlideError:  # find the bad slide(s): one by one
                for row in batch:
                    try:
                        read([row])
                    except SlideError as exc:
                        skipped[row.slide] = str(exc)
    stacked = torch.cat(features) if features else torch.empty(0)
    labels = torch.tensor([row.label for row in kept], dtype=torch.float32)
    return CachedFeatures(stacked, labels, [row.slide for row in kept], skipped)


def _val_auroc(classifier: Classifier, data: CachedFeatures) -> float:
    with torch.no_grad():
        scores = classifier.read_out(data.features).logit
    return float(auroc(data.labels.tolist(), scores.tolist()))


def _copies(params: list[torch.nn.Parameter]) -> list[Tensor]:
    """The readout's parameters copied: the CNN never changes, so it is not copied at each new best."""
    return [param.detach().clone() for param in params]


def refit_readout(classifier: Classifier, train: CachedFeatures, val: CachedFeatures, *, epochs: int,
                  lr: float, weight_decay: float, seed: int, trained_competes: bool = False,
                  after_pass: Callable[[int, Classifier], Any] | None = None) -> RefitResult:
    """Fit ``classifier``'s readout on cached features; keep the epoch of best validation AUROC.

    Epoch 0 is the readout as given; it is kept only if ``trained_competes`` and no epoch beats it, or if
    ``epochs`` is 0. ``classifier`` is changed in place. Both sets need positive and negative slides
    (``MagnetError`` otherwise). ``after_pass(epoch, classifier)``, if given, sees the readout after each
    epoch, 0 included, before the best one is restored (to study the choice).
    """
    for name, data in (("training", train), ("validation", val)):
        if len(set(data.labels.tolist())) < 2:
            raise MagnetError(f"readout refit: the {name} slides need both labels")
    device = next(classifier.parameters()).device
    train_features, train_labels = train.features.to(device), train.labels.to(device)
    val_data = CachedFeatures(val.features.to(device), val.labels, val.slides, val.skipped)
    params = classifier.readout_parameters()
    optimiser = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    classifier.eval()  # the frozen CNN is not run; the readout has no dropout or batch norm
    before = best = _val_auroc(classifier, val_data)
    best_epoch, best_state = 0, _copies(params)
    if not trained_competes:
        best = -math.inf  # the first pass replaces it
    if after_pass is not None:
        after_pass(0, classifier)
    for epoch in range(1, epochs + 1):
        for i in torch.randperm(len(train_labels), generator=generator).tolist():
            logit = classifier.read_out(train_features[i:i + 1]).logit
            loss = F.binary_cross_entropy_with_logits(logit, train_labels[i:i + 1])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        score = _val_auroc(classifier, val_data)
        if after_pass is not None:
            after_pass(epoch, classifier)
        if score > best:
            best, best_epoch, best_state = score, epoch, _copies(params)
    with torch.no_grad():
        for param, kept in zip(params, best_state, strict=True):
            param.copy_(kept)
    return RefitResult(epochs=epochs, best_epoch=best_epoch, val_auroc_before=before,
                       val_auroc_after=before if best_epoch == 0 else best,
                       n_train=len(train_labels), n_validation=len(val.labels),
                       seconds=time.perf_counter() - start)


def stratified_folds(labels: Tensor, folds: int, seed: int) -> list[list[int]]:
    """``folds`` disjoint lists of slide indices covering ``labels``, each label dealt out in turn after a
    seeded shuffle, so every fold holds both labels in about the set's proportion (sorted indices).
    ``MagnetError`` when a label has fewer than ``folds`` slides."""
    generator = torch.Generator().manual_seed(seed)
    dealt: list[list[int]] = [[] for _ in range(folds)]
    position = 0
    for label in (0.0, 1.0):
        members = torch.nonzero(labels == label).flatten()
        if len(members) < folds:
            raise MagnetError(f"readout refit: refit.folds={folds} needs at least {folds} slides of label "
                              f"{int(label)}; there are {len(members)}")
        for index in members[torch.randperm(len(members), generator=generator)].tolist():
            dealt[position % folds].append(index)  # continues where the other label stopped
            position += 1
    return [sorted(fold) for fold in dealt]


def refit_readout_folds(classifier: Classifier, data: CachedFeatures, *, folds: int, epochs: int, lr: float,
                        weight_decay: float, seed: int) -> RefitResult:
    """The readout set to the mean of ``folds`` refits (``refit_readout``, the trained readout never kept),
    fold k fitted on the other folds of ``data`` and choosing its pass on fold k; see the module docstring.

    Every refit starts from the readout as given; ``classifier`` is changed in place.
    """
    start = time.perf_counter()
    params = classifier.readout_parameters()
    trained = _copies(params)
    fitted: list[list[Tensor]] = []
    results: list[RefitResult] = []
    everyone = set(range(len(data.labels)))
    for k, held in enumerate(stratified_folds(data.labels, folds, seed)):
        with torch.no_grad():
            for param, value in zip(params, trained, strict=True):
                param.copy_(value)
        fit = data.subset(sorted(everyone - set(held)))
        results.append(refit_readout(classifier, fit, data.subset(held), epochs=epochs, lr=lr,
                                     weight_decay=weight_decay, seed=seed + k))
        fitted.append(_copies(params))
    with torch.no_grad():
        for i, param in enumerate(params):
            param.copy_(torch.stack([copies[i] for copies in fitted]).mean(0))
    return RefitResult(epochs=epochs, best_epoch=-1,
                       val_auroc_before=sum(r.val_auroc_before for r in results) / folds,
                       val_auroc_after=sum(r.val_auroc_after for r in results) / folds,
                       n_train=len(data.labels), n_validation=0, seconds=time.perf_counter() - start,
                       fold_epochs=[r.best_epoch for r in results])


def refit_run(run_dir: str | Path, train_rows: Sequence[ManifestRow], val_rows: Sequence[ManifestRow],
              pool: SlidePool, *, settings: RefitConfig | None = None, device: torch.device | str = "cpu",
              oracle: OracleZoom | None = None, echo: Callable[[str], Any] = print) -> RefitResult:
    """Refit the readout of the run ``run_dir`` and write it as its ``best.ckpt`` (atomically).

    The refit starts from the best checkpoint as training left it: ``best-trained.ckpt`` when an earlier
    refit kept it, else ``best.ckpt``, which is first copied there. ``settings`` (default: the checkpoint's
    ``refit``) are stored in the refitted checkpoint's config, and its ``readout_refit`` holds the result.
    """
    run_dir = Path(run_dir)
    trained, best = run_dir / TRAINED_CHECKPOINT, run_dir / "best.ckpt"
    payload = load_checkpoint(trained if trained.exists() else best)
    config = checkpoint_config(payload, best)
    if settings is not None:
        config = replace(config, refit=settings)
    instances = config.refit.readout_instances
    if instances is not None:  # the same weights, read over other instances from now on
        config = replace(config, model=replace(config.model, readout_instances=instances))
    if not trained.exists():
        save_checkpoint(trained, payload)
    model = build_offline(config.model)
    load_weights(model, payload["model"], best)
    model.to(device)
    batch = config.optim.batch_size
    train = final_patch_features(model, train_rows, pool, batch_size=batch, oracle=oracle, seed=config.seed)
    val = final_patch_features(model, val_rows, pool, batch_size=batch, oracle=oracle, seed=config.seed)
    for slide, reason in {**train.skipped, **val.skipped}.items():
        echo(f"readout refit: {slide} left out ({reason})")
    refit = config.refit
    if refit.folds > 1:
        result = refit_readout_folds(model.classifier, CachedFeatures.joined(train, val), folds=refit.folds,
                                     epochs=refit.epochs, lr=refit.lr, weight_decay=refit.weight_decay,
                                     seed=config.seed)
    else:
        result = refit_readout(model.classifier, train, val, epochs=refit.epochs, lr=refit.lr,
                               weight_decay=refit.weight_decay, seed=config.seed,
                               trained_competes=refit.trained_competes)
    save_checkpoint(best, {**payload, "config": config_dict(config), "readout_refit": asdict(result),
                           "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}})
    return result
