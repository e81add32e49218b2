"""Fit the gated attention MIL head on slide labels, keep the epoch with the best validation AUROC.

One slide (bag) per step, as in Ilse et al. 2018 and CLAM: bags differ in size by orders of magnitude, so
they are not batched. Binary cross-entropy on the slide logit, Adam. Every random draw (initial weights,
slide order, dropout) derives from ``(seed, epoch)``, so a fixed seed gives the same model at the same torch
thread count. Selection as the thumbnail baseline's: best validation AUROC, ties to the lower validation
loss; without a validation split holding both labels, the last epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from magnet.baselines.tiling.config import MILConfig
from magnet.baselines.tiling.mil import GatedAttentionMIL
from magnet.errors import MagnetError
from magnet.metrics.auroc import auroc

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


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    # Numerically stable BCE with logits: max(z, 0) - z y + log(1 + exp(-|z|)).
    return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))


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
    use_val = len(val_bags) == len(y_val) and len(np.unique(y_val)) == 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        in_dim = int(train_bags[0].shape[1])
        model = GatedAttentionMIL(in_dim, config.hidden, config.attention, config.dropout)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best: tuple[float, float] | None = None
        best_state = copy.deepcopy(model.state_dict())
        best_epoch = config.epochs
        history: History = []
        for epoch in range(1, config.epochs + 1):
            order = np.random.default_rng([config.seed, epoch]).permutation(len(y))
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout masks of this epoch
            model.train()
            losses = []
            for i in order:
                logit, _ = model(train_bags[i].float())
                loss = F.binary_cross_entropy_with_logits(logit, torch.tensor(y[i]))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            row: dict[str, float | None] = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                                            "val_auroc": None, "val_loss": None}
            if use_val:
                logits, _ = score_bags(model, val_bags)
                val_auroc, val_loss = auroc(y_val, logits), _bce(logits, y_val)
                row["val_auroc"], row["val_loss"] = val_auroc, val_loss
                key = (val_auroc, -val_loss)
                if best is None or key > best:
                    best, best_epoch, best_state = key, epoch, copy.deepcopy(model.state_dict())
            history.append(row)
            if progress is not None:
                progress(row)
    if use_val:
        model.load_state_dict(best_state)
    return TrainedMIL(model, best_epoch, history)
