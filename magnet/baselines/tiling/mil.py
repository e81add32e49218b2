"""Gated attention multiple-instance learning: one slide is a bag of tile features, one label per bag.

Ilse, Tomczak & Welling 2018, "Attention-based Deep Multiple Instance Learning" (ICML), gated variant:
each tile's feature ``x_k`` is projected to ``h_k = ReLU(W x_k)`` (dropout), scored
``a_k = w^T (tanh(V h_k) * sigmoid(U h_k))``, the scores are softmaxed over the bag's tiles, and the slide's
logit is a linear classifier of the attention-weighted mean ``z = sum_k softmax(a)_k h_k``. The attention
weights say which tiles the slide's prediction rests on: the baseline's "where".

CLAM-SB (Lu et al. 2021, Nature BME) is this network plus an instance-level clustering loss on the top-
and bottom-attended tiles; that loss is an option (``mil.instance_weight``, ``magnet.baselines.tiling.
clustering``), off by default: plain attention MIL on slide labels is what the paper's Table 1 compares
against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GatedAttentionMIL"]


class GatedAttentionMIL(nn.Module):
    """Tile features ``(N, D)`` of one slide to a logit and ``N`` attention weights summing to 1."""

    def __init__(self, in_dim: int, hidden: int = 128, attention: int = 64, dropout: float = 0.25) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attend_tanh = nn.Sequential(nn.Linear(hidden, attention), nn.Tanh(), nn.Dropout(dropout))
        self.attend_gate = nn.Sequential(nn.Linear(hidden, attention), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(attention, 1)
        self.classify = nn.Linear(hidden, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``features`` ``(N, D)``, ``N >= 1``, to ``(logit ()``, ``attention (N,))``."""
        logit, attention, _ = self.attend(features)
        return logit, attention

    def attend(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``forward``'s logit and attention, and the tiles' hidden features ``(N, hidden)`` they pool."""
        if features.ndim != 2 or features.shape[0] < 1:
            raise ValueError(f"expected tile features (N >= 1, D), got shape {tuple(features.shape)}")
        h = self.project(features)
        scores = self.score(self.attend_tanh(h) * self.attend_gate(h)).squeeze(1)
        attention = torch.softmax(scores, dim=0)
        logit = self.classify(attention @ h).squeeze(0)
        return logit, attention, h
