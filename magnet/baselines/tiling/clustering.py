"""CLAM's instance-level clustering loss, an option of the tiling baseline (``mil.instance_weight``).

Lu et al. 2021, "Data-efficient and weakly supervised computational pathology on whole-slide images"
(Nature Biomedical Engineering), Methods, "Instance-level clustering": besides the slide label, the attention
network's own ranking gives tile-level pseudo-labels. For a slide of class ``y``, the ``k`` most-attended
tiles are taken as evidence of ``y`` and the ``k`` least-attended as evidence against it, and a linear
instance classifier of class ``y`` on the tiles' hidden features learns to separate the two sets. The
gradient reaches the shared projection, so the hidden space is pulled apart along what attention ranks
high and low. With two classes and no subtyping (CLAM-SB on a binary task), only the classifier of the
slide's own class is trained on each slide.

The slide's loss becomes ``(1 - w) * bag + w * instance`` (CLAM weights the bag loss 0.7, so ``w = 0.3``).
[choice] Cross-entropy for the instance loss; CLAM's default is a smooth top-1 SVM, with cross-entropy its
documented alternative. A bag of fewer than two tiles gives no pseudo-labels and adds nothing; a bag of
fewer than ``2k`` tiles uses ``k = N // 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["InstanceClustering"]


class InstanceClustering(nn.Module):
    """Per-class instance classifiers on hidden tile features, trained on attention's top and bottom ``k``."""

    def __init__(self, hidden: int, k: int = 8, n_classes: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.classifiers = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(n_classes))

    def forward(self, hidden: Tensor, attention: Tensor, label: int) -> Tensor:
        """The instance loss of one slide: ``hidden`` ``(N, H)``, ``attention`` ``(N,)``, class ``label``."""
        k = min(self.k, hidden.shape[0] // 2)
        if k < 1:
            return hidden.sum() * 0.0  # keeps the graph (and the dtype) without pseudo-labels
        ranked = torch.argsort(attention.detach(), descending=True)
        chosen = torch.cat([ranked[:k], ranked[-k:]])
        targets = torch.cat([torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)])
        return F.cross_entropy(self.classifiers[label](hidden[chosen]), targets.to(hidden.device))
