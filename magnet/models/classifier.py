"""Classification layer (paper §3.2) and auxiliary classifiers (paper §3.3); METHOD.md §4.

- :class:`Classifier`: every final patch, in depth-first order, goes through a CNN; the sequence of features
  goes through a GRU; a head FC 512 -> FC 256 -> 1 logit reads the GRU state at **every** step, which is the
  running prediction after each patch (paper Figure 5). The slide's logit is the last step's.
- :class:`AuxiliaryClassifier`: a CNN (paper: ResNet-18) on every patch of one magnifying layer, the mean of
  the patch features, a linear layer, 1 logit.

The task is binary (tumour or not): one logit per output; the cross-entropy of the paper is BCE-with-logits
on it (``magnet.losses``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from magnet.models.backbones import build_backbone

__all__ = ["Classifier", "ClassifierOutput", "AuxiliaryClassifier"]


@dataclass
class ClassifierOutput:
    logit: Tensor  # (B,) the slide's logit: the last step's
    running_logits: Tensor  # (B, N) logit after each of the N patches (depth-first order)


def _resize(patches: Tensor, size: int) -> Tensor:
    if patches.shape[-1] == size and patches.shape[-2] == size:
        return patches
    return F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Classifier(nn.Module):
    """CNN per patch -> GRU(``gru_hidden``) -> FC 512 -> FC 256 -> 1 logit at every step (paper §3.2)."""

    def __init__(
        self,
        backbone: str = "inception_v3",
        gru_hidden: int = 512,
        input_size: int = 224,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.backbone = build_backbone(backbone, pretrained)
        self.gru = nn.GRU(self.backbone.feature_dim, gru_hidden, batch_first=True)
        # Paper §3.2: "two layers with 512 and 256 hidden neurons" then the prediction.
        self.head = nn.Sequential(
            nn.Linear(gru_hidden, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1)
        )

    def forward(self, patches: Tensor) -> ClassifierOutput:
        """``patches`` ``(B, N, 3, S, S)`` in [0, 1], in depth-first order."""
        batch, count = patches.shape[:2]
        images = _resize(patches.flatten(0, 1), self.input_size)
        features = self.backbone(images).view(batch, count, -1)
        states, _ = self.gru(features)  # (B, N, hidden)
        running = self.head(states).squeeze(-1)  # (B, N)
        return ClassifierOutput(logit=running[:, -1], running_logits=running)


class AuxiliaryClassifier(nn.Module):
    """CNN (paper: ResNet-18) per patch of one layer, mean of features, linear, 1 logit (paper §3.3)."""

    def __init__(self, backbone: str = "resnet18", pretrained: bool = False) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained)
        self.fc = nn.Linear(self.backbone.feature_dim, 1)

    def forward(self, patches: Tensor) -> Tensor:
        """``patches`` ``(B, N, 3, S, S)`` in [0, 1] -> logits ``(B,)``."""
        batch, count = patches.shape[:2]
        features = self.backbone(patches.flatten(0, 1)).view(batch, count, -1)
        logit: Tensor = self.fc(features.mean(dim=1)).squeeze(-1)
        return logit
