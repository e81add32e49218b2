"""Overfitting test: ``tiny`` tells 8 slides with a lesion from 8 without, from what its magnifying reads see.

The slides come in pairs that differ only by the lesion (same tissue), so nothing but the lesion can tell
them apart: no memorising of backgrounds. The lesion is a high-contrast, bright/dark checker whose mean is
the tissue colour: the 56 x 56 root view averages it down to a faint trace (< 10/255 per pixel), while a
224 px read shows it plainly (> 50/255; both asserted below). The test shows two things, each in a way that
does not depend on the initialisation seed:

1. Gradients flow end to end. One training-mode forward of the whole ``tiny`` model (as shipped: three
   magnifying layers, linearized sampler) on the 16 slides, then the slide cross-entropy alone (the GRU's
   last-step logit, no auxiliary terms) is back-propagated: the heads of every layer, layer 1's included,
   get finite, non-zero gradients, while the auxiliary classifiers (not in that term) get none. The ROIs of
   later reads are composed from detached thetas, so the only way from the slide logit back to layer 1's
   heads is theta_1 -> sampler -> layer 2's heads -> theta_2 -> ... -> the final patches -> the classifier
   (paper §3.1, §4.3).
2. The magnifying reads carry the lesion, enough for the model to fit the labels. The model's own
   classifier (small CNN -> GRU -> FC, from scratch) is trained with Adam on the final patches of that
   forward (8 per slide, 112 px sampled from 224 px reads at the untrained heads' boxes) until every slide
   is on the right side of 0 by a logit margin of ``MARGIN``; it must get there within ``MAX_STEPS`` steps
   and, with its batch-norm statistics recomputed, classify every slide in eval mode too.

Why the classifier is fitted on fixed final patches, not the whole model end to end: end-to-end Adam on all
16 slides (heads 3e-4, rest 3e-3) fitted only by the seed's luck: eval AUROC 0.89 for seed 0 after 19 steps,
0.66 and 0.58 for seeds 1 and 2 after 30; with the bilinear sampler seed 0 first fitted the training batch
at step 10 and lost it again at step 11. The bottleneck was the from-scratch GRU on noisy end-to-end steps
of ~1.7 s each (2 idle cores), not the reads: at a head learning rate that keeps the sparsemax support the
heads barely move in that many steps (docs/method.md §7, what the first prototypes taught), so the final
patches stay close to the untrained layout's, the ones fitted here. Nor does it show that the heads learn
*where* to zoom (docs/method.md §7: label-only localisation did not emerge in ~600 steps in the first
prototypes); the untrained heads' spread of boxes already covers the lesion at a useful resolution.

Measured for ``torch.manual_seed(s)`` and generator seed ``s``, s = 0..4 (``fit_seed``): the margin was
reached after 8-9 steps (budget 24); eval AUROC and accuracy 1.0, every eval logit >= 2.0 on the right
side; 5-33 s per seed on 2 cores shared with other jobs. Not a claim that the root view holds nothing: the
same classifier, fed each slide's 56 px root view (nearest-upsampled to 112 px) 8 times instead, memorises
the 16 slides from their faint trace too, in 15-24 steps for the same seeds; so part 2 asserts that the
reads are fitted, not that the root view fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from model_fixtures import lesion_pair
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from magnet.models import Classifier, build_model
from magnet.slides.tensor_source import TensorRegionSource
from magnet.training.losses import magnet_loss

SLIDE, RADIUS, CELL = 512, 40, 4  # level-0 px: a lesion 80 px across, 4 px texture cells
MAX_STEPS = 24  # Adam steps of the classifier on the fixed final patches
LR = 1e-3
MARGIN = 2.0  # every training logit on the right side of 0 by this much (p < 0.12 or > 0.88)
SEED = 0


def lesion_slides() -> tuple[list[TensorRegionSource], Tensor]:
    """8 (negative, positive) pairs that differ only by a lesion, and their labels (0, 1, 0, 1, ...)."""
    sources, labels = [], []
    for seed in range(8):
        negative, positive, _ = lesion_pair(SLIDE, RADIUS, seed=seed, cell=CELL)
        sources += [TensorRegionSource(negative), TensorRegionSource(positive)]
        labels += [0, 1]
    return sources, torch.tensor(labels, dtype=torch.float32)


@dataclass
class Fit:
    head_grad_norms: list[float]  # heads of each magnifying layer, from the slide cross-entropy alone
    steps: int | None  # Adam steps until every training logit cleared MARGIN; None: not within MAX_STEPS
    auroc: float  # eval mode, recomputed batch-norm statistics
    accuracy: float
    signed_logits: Tensor  # eval-mode logit times (+1 positive, -1 negative): > 0 where right


def _recompute_batch_norm(module: nn.Module, patches: Tensor) -> None:
    """Replace the lagging running BN statistics by the exact statistics of ``patches``."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.reset_running_stats()
            child.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        module(patches)


def _train_classifier(classifier: Classifier, patches: Tensor, target: Tensor) -> int | None:
    """Adam on ``patches`` until every logit clears MARGIN: the number of steps taken, or None."""
    optimizer = torch.optim.Adam(classifier.parameters(), lr=LR)
    sign = 2 * target - 1
    classifier.train()
    for step in range(MAX_STEPS + 1):
        logit = classifier(patches).logit
        if bool((sign * logit.detach() > MARGIN).all()):
            return step
        if step == MAX_STEPS:
            return None
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(logit, target).backward()
        optimizer.step()
    return None


def fit_seed(seed: int, sources: list[TensorRegionSource], target: Tensor) -> Fit:
    """Part 1 (gradients end to end) and part 2 (fit on the final patches) for one initialisation seed."""
    torch.manual_seed(seed)
    model = build_model("tiny")
    model.train()
    output = model(sources, generator=torch.Generator().manual_seed(seed))
    magnet_loss(output, target).final.backward()
    norms = []
    for index, layer in enumerate(model.layers, start=1):
        grads = [p.grad for p in layer.heads.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads), index
        norms.append(float(torch.stack([g.norm() for g in grads]).norm()))
    assert all(p.grad is None for p in model.aux_classifiers.parameters())  # not in the slide term

    patches = output.patches[-1].detach()  # (16, 8, 3, 112, 112)
    steps = _train_classifier(model.classifier, patches, target)
    _recompute_batch_norm(model.classifier, patches)
    model.classifier.eval()
    with torch.no_grad():
        logit = model.classifier(patches).logit
    probability = torch.sigmoid(logit)
    return Fit(
        head_grad_norms=norms,
        steps=steps,
        auroc=float(roc_auc_score(target.numpy(), probability.numpy())),
        accuracy=float(((probability > 0.5).float() == target).float().mean()),
        signed_logits=(2 * target - 1) * logit,
    )


def test_tiny_fits_lesions_that_are_faint_at_56px_from_its_magnifying_reads() -> None:
    sources, target = lesion_slides()
    root = torch.eye(3).unsqueeze(0)
    pairs = list(zip(sources[::2], sources[1::2], strict=True))
    at_56 = max((n.read(root, 56) - p.read(root, 56)).abs().max().item() for n, p in pairs)
    at_224 = min((n.read(root, 224) - p.read(root, 224)).abs().max().item() for n, p in pairs)
    assert at_56 < 0.04 < 0.2 < at_224  # a faint trace in the root view (< 10/255), plain in a 224 read

    fit = fit_seed(SEED, sources, target)
    assert all(norm > 0 for norm in fit.head_grad_norms), fit.head_grad_norms  # layer 1's heads included
    assert fit.steps is not None, f"no fit within {MAX_STEPS} steps"
    assert fit.auroc == 1.0 and fit.accuracy == 1.0, (fit.auroc, fit.accuracy, fit.signed_logits)
