"""Helpers for tests of batch-norm folding (not tests)."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batch_norms(network: nn.Module, seed: int = 0) -> None:
    """Statistics and affine weights far from the identity, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.3, 3.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)


def count_modules(network: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in network.modules())
