"""Fit the gated attention MIL head on slide labels, keep the epoch with the best validation AUROC.

One slide (bag) per step, as in Ilse et al. 2018 and CLAM: bags differ in size by orders of magnitude, so
they are not batched. Binary cross-entropy on the slide logit, Adam; with ``instance_weight > 0``,
CLAM-SB's instance clustering loss beside it (``magnet.baselines.tiling.clustering``). Every random draw
(initial weights, slide order, dropout) derives from ``(seed, epoch)``, so a fixed seed gives the same model
at the same torch thread count. Selection as the thumbnail baseline's: best validation AUROC, ties to the
lower validation loss; without a validation split holding both labels, the last epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from magnet.baselines.selection import BestEpoch
from magnet.baselines.tiling.clustering import InstanceClustering
from magnet.baselines.tiling.config import MILConfig
from magnet.baselines.tiling.mil import GatedAttentionMIL
from magnet.errors import MagnetError

__all__ = ["TrainedMIL", "fit_mil", "score_bags"]

History = list[dict[str, float | None]]


@dataclass
class TrainedMIL:
    model: GatedAttentionMIL
    best_epoch: int
    history: History


def score_bags(model: GatedAttentionMIL, bags: Sequence[Tensor]) -> tuple[np.ndarray, list[Tensor]]:
    """Logits ``(B,)`` and attention weights (one ``(N_b,)`` tensor per bag), in evaluation mode."""
    model.eval()
    logits, attention = [], []
    with torch.no_grad():
        for bag in bags:
            logit, weights = model(bag.float())
            logits.append(float(logit))
            attention.append(weights)
    return np.asarray(logits, dtype=np.float64), attention


def fit_mil(
    train_bags: Sequence[Tensor],
    train_labels: Sequence[int],
    val_bags: Sequence[Tensor],
    val_labels: Sequence[int],
    config: MILConfig,
    *,
    progress: Callable[[dict[str, float | None]], None] | None = None,
) -> TrainedMIL:
    """Train on bags of tile features ``(N_i, D)``; ``progress(row)`` after every epoch."""
    y = np.asarray(train_labels, dtype=np.float32)
    if len(y) != len(train_bags) or len(np.unique(y)) < 2:
        raise MagnetError(f"tiling baseline: needs positive and negative training slides ({len(train_bags)} "
                          f"slides with features, {int(y.sum())} positive)")
    y_val = np.asarray(val_labels, dtype=np.float64)
    if len(val_bags) != len(y_val):
        raise ValueError(f"{len(val_bags)} validation bags but {len(y_val)} labels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        in_dim = int(train_bags[0].shape[1])
        model = GatedAttentionMIL(in_dim, config.hidden, config.attention, config.dropout)
        # Built only when used, so the default run draws the same random numbers as plain attention MIL.
        clustering = InstanceClustering(config.hidden, config.instance_k) if config.instance_weight else None
        parameters = [*model.parameters(), *(clustering.parameters() if clustering else [])]
        optimiser = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
        best = BestEpoch(model, y_val, config.epochs)
        history: History = []
        for epoch in range(1, config.epochs + 1):
            order = np.random.default_rng([config.seed, epoch]).permutation(len(y))
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout masks of this epoch
            model.train()
            losses = []
            for i in order:
                logit, attention, hidden = model.attend(train_bags[i].float())
                loss = F.binary_cross_entropy_with_logits(logit, torch.tensor(y[i]))
                if clustering is not None:
                    instance = clustering(hidden, attention, int(y[i]))
                    loss = (1 - config.instance_weight) * loss + config.instance_weight * instance
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            row: dict[str, float | None] = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                                            "val_auroc": None, "val_loss": None}
            if best.usable:
                row.update(best.offer(epoch, score_bags(model, val_bags)[0]))
            history.append(row)
            if progress is not None:
                progress(row)
    best.restore()
    return TrainedMIL(model, best.epoch, history)
