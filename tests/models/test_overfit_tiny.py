"""One-minute overfitting test (issue 4): ``tiny`` learns to tell 8 slides with a lesion from 8 without.

The slides come in pairs that differ only by the lesion (same tissue), so nothing but the lesion can tell
them apart: no memorising of backgrounds. The lesion is a high-contrast, bright/dark checker whose mean is
the tissue colour: the 56 x 56 root view averages it away (asserted below), while the finer reads of the
magnifying path (I' of the children, the final 224 px reads) show its texture. What this shows: gradients
flow end to end and the magnifying reads carry information the root view does not hold, enough for the
model to fit the labels. It does not show that the heads learn *where* to zoom (METHOD.md §7: label-only
localisation did not emerge in ~600 steps in the prototypes); the untrained heads' spread of boxes
already covers the lesion at a useful resolution.

Budget: at most ``MAX_STEPS`` Adam steps on all 16 slides (~1.7 s each on 2 idle cores); it stops as soon
as a training step classifies every slide correctly (step 19, ~37 s, with these seeds).

KNOWN WEAKNESS (measured, not hidden): the fit depends on the initialisation seed. With
``torch.manual_seed(1)`` or ``(2)`` the model has not fitted after 30 steps (eval AUROC 0.66 / 0.58); seed 2
reached AUROC 0.81 after 60 steps. The lesion is in >= 4 of the 8 final patches of every positive slide
for all three seeds, so the bottleneck is the from-scratch GRU classifier (the auxiliary classifier on the
final patches learns first), not coverage. Re-tune if a model change breaks this test.
"""

from __future__ import annotations

import torch
from model_fixtures import lesion_pair
from sklearn.metrics import roc_auc_score
from torch import nn

from magnet.models import MagNet, build_model
from magnet.slides.tensor_source import TensorRegionSource
from magnet.training.losses import magnet_loss

SLIDE, RADIUS, CELL = 512, 40, 4  # level-0 px: a lesion 80 px across, 4 px texture cells
MAX_STEPS = 30
# METHOD.md §7: heads at 1e-3 collapsed the sparsemax support; 3e-4 stayed near the identity view.
HEAD_LR, REST_LR = 3e-4, 3e-3


def _recalibrate_batch_norm(model: MagNet, sources: list[TensorRegionSource]) -> None:
    """Replace the lagging running BN statistics by exact averages over the training slides."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for seed in range(2):
            model(sources, generator=torch.Generator().manual_seed(seed))


def test_tiny_overfits_slides_whose_lesion_is_invisible_at_56px() -> None:
    sources, labels = [], []
    for seed in range(8):
        negative, positive, _ = lesion_pair(SLIDE, RADIUS, seed=seed, cell=CELL)
        sources += [TensorRegionSource(negative), TensorRegionSource(positive)]
        labels += [0, 1]
    target = torch.tensor(labels, dtype=torch.float32)

    root = torch.eye(3).unsqueeze(0)
    pairs = list(zip(sources[::2], sources[1::2], strict=True))
    at_56 = max((n.read(root, 56) - p.read(root, 56)).abs().max().item() for n, p in pairs)
    at_224 = min((n.read(root, 224) - p.read(root, 224)).abs().max().item() for n, p in pairs)
    assert at_56 < 0.04 < 0.2 < at_224  # invisible in the root view (< 10/255), plain in a 224 read

    torch.manual_seed(0)
    model = build_model("tiny")
    heads = [p for name, p in model.named_parameters() if name.startswith("layers.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("layers.")]
    optimizer = torch.optim.Adam([{"params": heads, "lr": HEAD_LR}, {"params": rest, "lr": REST_LR}])
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(MAX_STEPS):
        output = model(sources, generator=generator)
        loss = magnet_loss(output, target)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        if bool(((output.logit.detach() > 0).float() == target).all()):
            break

    _recalibrate_batch_norm(model, sources)
    model.eval()
    with torch.no_grad():
        probability = torch.sigmoid(model(sources).logit)
    accuracy = ((probability > 0.5).float() == target).float().mean().item()
    auroc = roc_auc_score(labels, probability.numpy())
    assert auroc >= 0.95 and accuracy >= 0.875, (auroc, accuracy, probability)
