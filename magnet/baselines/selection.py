"""Checkpoint selection shared by the baselines: keep the epoch with the best validation AUROC.

Ties go to the lower validation loss (binary cross-entropy with logits). Without a validation split holding
both labels there is nothing to select on, and the last epoch is kept.
"""

from __future__ import annotations

import copy

import numpy as np
from torch import Tensor, nn

from magnet.metrics.auroc import auroc

__all__ = ["BestEpoch", "bce_with_logits"]


def bce_with_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of ``logits`` against 0/1 ``labels``, in NumPy."""
    # Numerically stable: max(z, 0) - z y + log(1 + exp(-|z|)).
    return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))


class BestEpoch:
    """Tracks the best epoch of ``model`` on validation labels ``val_labels`` (see the module docstring).

    ``offer(epoch, logits)`` after each epoch's validation returns the row's ``val_auroc`` and ``val_loss``;
    ``restore()`` puts the best epoch's weights back into the model (a no-op without validation).
    """

    def __init__(self, model: nn.Module, val_labels: np.ndarray, last_epoch: int) -> None:
        self.model = model
        self.labels = np.asarray(val_labels, dtype=np.float64).reshape(-1)
        self.usable = len(np.unique(self.labels)) == 2
        self.epoch = last_epoch
        self._key: tuple[float, float] | None = None
        self._state: dict[str, Tensor] = copy.deepcopy(model.state_dict())

    def offer(self, epoch: int, logits: np.ndarray) -> dict[str, float]:
        val_auroc, val_loss = auroc(self.labels, logits), bce_with_logits(logits, self.labels)
        key = (val_auroc, -val_loss)
        if self._key is None or key > self._key:
            self._key, self.epoch, self._state = key, epoch, copy.deepcopy(self.model.state_dict())
        return {"val_auroc": val_auroc, "val_loss": val_loss}

    def restore(self) -> None:
        if self.usable:
            self.model.load_state_dict(self._state)
