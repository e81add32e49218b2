"""Classification layer (paper §3.2) and auxiliary classifiers (paper §3.3); docs/method.md §4.

- :class:`Classifier`: every final patch, in depth-first order, goes through a CNN; the sequence of features
  goes through a GRU; a head FC 512 -> FC 256 -> 1 logit reads the GRU state at **every** step, which is the
  running prediction after each patch (paper Figure 5). The slide's logit is the last step's.
  [choice, docs/method.md §9] ``readout="max"`` or ``"lse"`` drops the GRU: the same FC head gives one logit
  per
  patch and the slide logit is their max or log-mean-exp (multiple-instance pooling: one patch on a lesion
  can decide alone, where a GRU from scratch must first learn to remember it); the running logits are the
  pool over the first n patches.
  ``readout="attention"`` [choice]: additive attention MIL (Javed et al. 2022, "Additive MIL: intrinsically
  interpretable multiple instance learning for pathology", NeurIPS): the same per-patch logits, weighted by
  gated attention over the patches' CNN features (Ilse et al. 2018, ICML: ``w^T (tanh(V x) * sigmoid(U x))``,
  softmaxed over the patches) and summed. The weights can put the whole decision on one patch, as max does,
  while the gradient reaches every patch, as log-mean-exp's does; each patch keeps its own logit (head value
  reads it). The tiling baseline's gated attention (``magnet.baselines.tiling.mil``) pools features
  instead, so it has no per-tile logit.
  ``instances="cells"`` [choice]: the per-patch head scores each cell of the CNN's last spatial map instead of
  the map pooled over the patch, and a patch's logit is the readout's pool (max, or log-mean-exp for lse and
  attention) of its cells' logits: multiple instances at the scale of the map's cells (Lite0 at 224 px: 7 x 7
  cells of a patch), so a lesion that fills one cell is not diluted by the tissue of the others. The cells'
  scores are the class activation map of Zhou et al. (CVPR 2016) read through the readout's own head.
- :class:`AuxiliaryClassifier`: a CNN (paper: ResNet-18) on every patch of one magnifying layer, the mean of
  the patch features, a linear layer, 1 logit.

The task is binary (tumour or not): one logit per output; the cross-entropy of the paper is BCE-with-logits
on it (``magnet.training.losses``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.models.backbones import CellMap, build_backbone
from magnet.models.constant_cnn import PreparedCopy
from magnet.models.model_config import READOUT_INSTANCES, READOUTS

__all__ = [
    "AuxiliaryClassifier", "Classifier", "ClassifierOutput", "GatedPatchAttention", "attention_running",
    "pool_running",
]


@dataclass
class ClassifierOutput:
    logit: Tensor  # (B,) the slide's logit: the last step's
    running_logits: Tensor  # (B, N) logit after each of the N patches (depth-first order)
    patch_logits: Tensor | None = None  # (B, N) each patch's own logit (None for the GRU)
    attention: Tensor | None = None  # (B, N) the patches' attention weights, summing to 1 (readout attention)


def _resize(patches: Tensor, size: int) -> Tensor:
    if patches.shape[-1] == size and patches.shape[-2] == size:
        return patches
    return F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Classifier(nn.Module):
    """CNN per patch -> GRU(``gru_hidden``) -> FC 512 -> FC 256 -> 1 logit at every step (paper §3.2).

    ``readout`` "max" / "lse" / "attention" [choice]: CNN per patch -> FC 512 -> FC 256 -> 1 logit per
    patch, pooled (attention: weighted by :class:`GatedPatchAttention` of the CNN features).
    ``frozen`` [choice]: the CNN keeps its weights and batch-norm statistics; gradients still pass through it
    to the patches (and so to the zoom), but none reach its weights. Being a constant function, it runs as
    a prepared copy (batch norms folded, channels-last; ``magnet.models.constant_cnn``): the same features,
    about 2 x faster for EfficientNet-Lite0 on a CPU. The copy is not part of the state dict.
    """

    def __init__(
        self,
        backbone: str = "inception_v3",
        gru_hidden: int = 512,
        input_size: int = 224,
        pretrained: bool = False,
        readout: str = "gru",
        load_weights: bool = True,
        frozen: bool = False,
        instances: str = "patches",
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"readout={readout!r}: must be one of {', '.join(READOUTS)}")
        if instances not in READOUT_INSTANCES:
            raise ConfigError(f"instances={instances!r}: must be one of {', '.join(READOUT_INSTANCES)}")
        if instances == "cells" and readout == "gru":
            raise ConfigError(
                "instances='cells' needs a per-patch head: readout max, lse or attention, not gru"
            )
        self.input_size = input_size
        self.readout = readout
        self.reads_cells = instances == "cells"
        self.backbone = build_backbone(backbone, pretrained, load_weights, weights)
        self.frozen = frozen
        self._prepared_backbone = PreparedCopy()
        self._prepared_cell_map = PreparedCopy()
        if frozen:
            self.backbone.requires_grad_(False).eval()
        features = self.backbone.feature_dim
        self.gru = nn.GRU(features, gru_hidden, batch_first=True) if readout == "gru" else None
        self.attention = GatedPatchAttention(features) if readout == "attention" else None
        width = gru_hidden if self.gru is not None else features
        # Paper §3.2: "two layers with 512 and 256 hidden neurons" then the prediction.
        self.head = nn.Sequential(
            nn.Linear(width, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1)
        )

    def train(self, mode: bool = True) -> Classifier:
        """As ``nn.Module.train``, but a frozen backbone stays in evaluation mode (its BN statistics)."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, patches: Tensor) -> ClassifierOutput:
        """``patches`` ``(B, N, 3, S, S)`` in [0, 1], in depth-first order."""
        return self.read_out(self.features(patches))

    def input_images(self, patches: Tensor) -> Tensor:
        """``patches`` ``(B, N, 3, S, S)`` as the CNN sees them: ``(B*N, 3, s, s)`` at its input size."""
        return _resize(patches.flatten(0, 1), self.input_size)

    def features(self, patches: Tensor) -> Tensor:
        """What the readout reads of ``patches`` ``(B, N, 3, S, S)``: the CNN's features ``(B, N, D)``, or,
        where its instances are cells, the CNN's last spatial maps ``(B, N, D, h, w)``."""
        batch, count = patches.shape[:2]
        images = self.input_images(patches)
        if self.reads_cells:
            maps = self._maps(images)
            return maps.view(batch, count, *maps.shape[1:])
        backbone = self._prepared_backbone.of(self.backbone) if self.frozen else self.backbone
        return backbone(images).view(batch, count, -1)

    def pooled(self, features: Tensor) -> Tensor:
        """``features`` as ``(B, N, D)`` patch features: maps ``(B, N, D, h, w)`` through the CNN's own global
        pool, pooled features as they are."""
        if features.dim() == 3:
            return features
        batch, count = features.shape[:2]
        return CellMap(self.backbone).pool(features.flatten(0, 1)).view(batch, count, -1)

    def _maps(self, images: Tensor) -> Tensor:
        """The CNN's last spatial maps ``(B*N, D, h, w)`` of ``images``, with gradient to the images (and to
        the CNN's weights where it learns)."""
        if self.frozen or self._prepared_cell_map.pinned:
            return self._constant_maps(images)
        return CellMap(self.backbone)(images)

    @torch.no_grad()
    def cell_logits(self, patches: Tensor) -> Tensor:
        """The per-patch head applied to each cell of the CNN's last spatial map of ``patches``
        ``(B, N, 3, S, S)``: ``(B, N, h, w)``, where in each patch the readout sees tumour (Lite0 at 224 px:
        7 x 7 cells). No gradient: it says where to look again (``magnet.models.recentre``), not what to
        learn. Needs a per-patch head (readout max, lse or attention)."""
        self._require_patch_head()
        batch, count = patches.shape[:2]
        images = self.input_images(patches)
        if self.frozen or self._prepared_cell_map.pinned:
            maps = self._constant_maps(images)
        else:  # batch norms on their running statistics, so this look updates none of them
            was_training = self.backbone.training
            self.backbone.eval()
            try:
                maps = CellMap(self.backbone)(images)
            finally:
                self.backbone.train(was_training)
        return self._head_on_cells(maps, batch, count)

    def features_and_cell_logits(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """``features(patches)`` and ``cell_logits(patches)``, from one pass of the CNN where it is frozen:
        the features are then the pool of the very map whose cells the head reads (the same values, to float
        rounding). An unfrozen CNN runs twice, as each method alone does: its features in training mode,
        its cells on the running batch-norm statistics. Where the instances are cells, the features are the
        maps, and the cells are scored on those very maps (one pass, frozen or not)."""
        self._require_patch_head()
        if self.reads_cells:  # the features are the very maps whose cells the head reads
            maps = self.features(patches)
            with torch.no_grad():
                return maps, self._head_on_cells(maps.detach().flatten(0, 1), *maps.shape[:2])
        if not self.frozen:
            return self.features(patches), self.cell_logits(patches)
        batch, count = patches.shape[:2]
        images = self.input_images(patches)
        maps = self._constant_maps(images)  # keeps any gradient to the patches
        features = CellMap(self.backbone).pool(maps).view(batch, count, -1)
        with torch.no_grad():
            cells = self._head_on_cells(maps.detach(), batch, count)
        return features, cells

    def _require_patch_head(self) -> None:
        if self.gru is not None:
            raise ValueError("cell_logits needs a per-patch head: readout max, lse or attention, not gru")

    def _constant_maps(self, images: Tensor) -> Tensor:
        """The last spatial maps ``(B*N, D, h, w)`` of a frozen (or pinned) CNN, by its prepared copy."""
        return self._prepared_cell_map.of(CellMap(self.backbone).eval())(images)

    def _head_on_cells(self, maps: Tensor, batch: int, count: int) -> Tensor:
        """The per-patch head on each cell of ``maps`` ``(B*N, D, h, w)``: ``(B, N, h, w)``."""
        cells = self.head(maps.permute(0, 2, 3, 1)).squeeze(-1)
        return cells.view(batch, count, *cells.shape[-2:])

    def pin_cell_map(self, prepared: nn.Module) -> None:
        """``cell_logits`` runs ``prepared`` (a prepared ``CellMap`` of this backbone) from now on: for an
        inference copy (``magnet.inference.fast_model``), whose CNN is already a prepared graph."""
        self._prepared_cell_map.pin(prepared)

    def readout_parameters(self) -> list[nn.Parameter]:
        """Every parameter after the CNN (GRU or attention, and the FC head): what ``read_out`` learns."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def read_out(self, features: Tensor) -> ClassifierOutput:
        """What ``features`` gives (patch features ``(B, N, D)`` or cell maps ``(B, N, D, h, w)``) to the
        slide's logits."""
        if self.gru is not None:
            # A copied or re-cast GRU's weights are no longer one cuDNN block (a warning on every GPU call,
            # and a copy per call); this packs them again, and does nothing on a CPU.
            self.gru.flatten_parameters()
            states, _ = self.gru(features)  # (B, N, hidden)
            running = self.head(states).squeeze(-1)  # (B, N)
            return ClassifierOutput(logit=running[:, -1], running_logits=running)
        patch_logits = self._patch_logits(features)
        if self.attention is not None:
            scores = self.attention(self.pooled(features))
            running = attention_running(patch_logits, scores)
            return ClassifierOutput(logit=running[:, -1], running_logits=running, patch_logits=patch_logits,
                                    attention=torch.softmax(scores, dim=1))
        running = pool_running(patch_logits, self.readout)
        return ClassifierOutput(logit=running[:, -1], running_logits=running, patch_logits=patch_logits)

    def _patch_logits(self, features: Tensor) -> Tensor:
        """One logit per patch ``(B, N)``: the head on each patch's features, or the readout's pool of the
        head on each of its cells (max for max, log-mean-exp otherwise)."""
        if features.dim() == 3:
            return self.head(features).squeeze(-1)
        cells = self._head_on_cells(features.flatten(0, 1), *features.shape[:2]).flatten(2)  # (B, N, h * w)
        if self.readout == "max":
            return cells.amax(dim=-1)
        return torch.logsumexp(cells, dim=-1) - math.log(cells.shape[-1])


class GatedPatchAttention(nn.Module):
    """Gated attention scores ``(B, N)`` of patch features ``(B, N, D)``: ``w^T (tanh(V x) * sigmoid(U x))``
    (Ilse et al. 2018); softmaxed over the N patches by the caller."""

    def __init__(self, features: int, hidden: int = 128) -> None:
        super().__init__()
        self.tanh_branch = nn.Linear(features, hidden)
        self.gate_branch = nn.Linear(features, hidden)
        self.score = nn.Linear(hidden, 1)

    def forward(self, features: Tensor) -> Tensor:
        gated = torch.tanh(self.tanh_branch(features)) * torch.sigmoid(self.gate_branch(features))
        return self.score(gated).squeeze(-1)


def attention_running(patch_logits: Tensor, scores: Tensor) -> Tensor:
    """Running attention pool ``(B, N)``: entry n is sum_{i <= n} softmax(scores_0..n)_i * logit_i, the
    slide's logit had it seen patches 0..n only (a masked softmax per prefix; N is a few dozen)."""
    count = patch_logits.shape[1]
    seen = torch.ones(count, count, dtype=torch.bool, device=scores.device).tril()  # [n, i]: i <= n
    masked = scores.unsqueeze(1).masked_fill(~seen, float("-inf"))  # (B, N, N)
    return (torch.softmax(masked, dim=-1) * patch_logits.unsqueeze(1)).sum(-1)


def pool_running(patch_logits: Tensor, readout: str) -> Tensor:
    """Running pool ``(B, N)`` of per-patch logits: entry n pools patches 0..n (max or log-mean-exp)."""
    if readout == "max":
        return patch_logits.cummax(dim=1).values
    counts = torch.arange(1, patch_logits.shape[1] + 1, device=patch_logits.device, dtype=patch_logits.dtype)
    return torch.logcumsumexp(patch_logits, dim=1) - counts.log()


class AuxiliaryClassifier(nn.Module):
    """CNN (paper: ResNet-18) per patch of one layer, mean of features, linear, 1 logit (paper §3.3)."""

    def __init__(
        self, backbone: str = "resnet18", pretrained: bool = False, load_weights: bool = True
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained, load_weights)
        self.fc = nn.Linear(self.backbone.feature_dim, 1)

    def forward(self, patches: Tensor) -> Tensor:
        """``patches`` ``(B, N, 3, S, S)`` in [0, 1] -> logits ``(B,)``."""
        batch, count = patches.shape[:2]
        features = self.backbone(patches.flatten(0, 1)).view(batch, count, -1)
        logit: Tensor = self.fc(features.mean(dim=1)).squeeze(-1)
        return logit
