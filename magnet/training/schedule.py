"""What changes with the step and the epoch: random generators, the learning rate, the parameter groups.

Every random draw of an epoch (shuffling, dihedral maps, sampler noise) comes from a generator seeded by
``(seed, epoch, salt)``, so a run resumed from the checkpoint of epoch k repeats exactly the draws of a run
that never stopped. The learning rate follows the paper §4.3: cosine annealing per epoch, after an optional
linear warm-up [choice]; the localisation heads may get their own rate [choice, ``optim.head_lr``].
"""

from __future__ import annotations

import math
from typing import Any

import torch

from magnet.models.magnet import MagNet
from magnet.training.recipe import TrainConfig

__all__ = ["epoch_generator", "lr_factor", "param_groups"]


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for the draws of ``epoch`` (``salt`` tells apart the draws within it, e.g. steps)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + salt) % (2**63 - 1))
    return g


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine annealing to zero over the remaining epochs (per epoch)."""
    warm, total = cfg.optim.warmup_epochs, max(cfg.optim.epochs, 1)
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    span = max(total - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warm) / span))


def param_groups(model: MagNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam's groups: the heads at ``optim.head_lr`` (when set), everything else at ``optim.lr``.

    Each group keeps its ``base_lr``; the epoch's rate is ``base_lr * lr_factor``. Frozen weights
    (``model.freeze_backbone``) are in no group.
    """
    heads = list(model.head_parameters())
    head_ids = {id(p) for p in heads}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    head_lr = cfg.optim.head_lr or cfg.optim.lr
    groups = [{"params": rest, "lr": cfg.optim.lr, "base_lr": cfg.optim.lr}]
    if heads:
        groups.append({"params": heads, "lr": head_lr, "base_lr": head_lr})
    return groups
