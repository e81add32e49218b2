"""A small CNN whose weights are learned without labels on the slides' own cells (``magnet pretrain``).

[choice, not the paper] (docs/method.md §9) The paper's classifier CNN starts from ImageNet (§4.3). On our
virtual slides a readout over the cells of frozen ImageNet maps, fitted from slide labels on a tree's
final boxes, scored isolated tumour cells below chance, where the same readout over the cells of a small CNN
pre-trained by contrastive learning on those slides' patches scored them above it (docs/BENCHMARKS.md, "A
self-supervised cell encoder as the 'what'"). This is that CNN, as a classifier backbone
(``model.backbone: cell_encoder``): five 3x3 convolutions, two of stride 2, 128 channels (0.28 M weights).

Its spatial map is read in 32-px cells, as EfficientNet-Lite0's last map at 224 px (7 x 7): the stride-4
map averaged over 8 x 8 squares. The pooled feature of a patch is the mean of its cells. Inputs in [0, 1]
are centred on 0.5, not ImageNet-normalised: the encoder never saw ImageNet.

The weights come from ``magnet pretrain`` (``magnet.training.contrastive``), saved with the patch resolution
they were learned at; ``load_encoder_weights`` reads such a file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError

__all__ = ["CELL_PX", "CELL_ENCODER_WIDTH", "CellEncoder", "ENCODER_FILE_KIND", "load_encoder_weights"]

CELL_PX = 32  # a cell's side in input pixels: Lite0's stride, so both backbones' cells cover the same area
CELL_ENCODER_WIDTH = 128
# Written into every weights file, so that a file of another kind is refused by name, not by a key error.
ENCODER_FILE_KIND = "magnet-cell-encoder"


class CellEncoder(nn.Module):
    """``(N, 3, H, W)`` in [0, 1] to ``(N, width)`` features (``forward``) or ``(N, width, H/32, W/32)``
    cell maps (``feature_map``); H and W multiples of 32 give whole cells."""

    def __init__(self, width: int = CELL_ENCODER_WIDTH) -> None:
        super().__init__()
        channels = (3, 32, 64, 64, width, width)
        strides = (1, 2, 1, 2, 1)
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels[:-1], channels[1:], strides, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.width = width

    def dense_map(self, images: Tensor) -> Tensor:
        """The stride-4 map ``(N, width, H/4, W/4)``: what contrastive pre-training pools over a crop."""
        out: Tensor = self.trunk(images - 0.5)
        return out

    def feature_map(self, images: Tensor) -> Tensor:
        """The cell map: the stride-4 map averaged over each 32-px cell."""
        return F.avg_pool2d(self.dense_map(images), CELL_PX // 4, ceil_mode=True)

    def forward(self, images: Tensor) -> Tensor:
        return self.feature_map(images).mean(dim=(2, 3))


def load_encoder_weights(encoder: CellEncoder, path: str | Path) -> None:
    """Load a ``magnet pretrain`` weights file into ``encoder``; a missing or foreign file is a
    ``ConfigError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such cell-encoder weights file (write one with `magnet pretrain`)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: the same message for every cause
        raise ConfigError(f"{path}: not a cell-encoder weights file ({type(error).__name__})") from error
    if not isinstance(saved, dict) or saved.get("kind") != ENCODER_FILE_KIND:
        raise ConfigError(f"{path}: not a cell-encoder weights file (written by `magnet pretrain`)")
    if saved.get("width") != encoder.width:
        raise ConfigError(f"{path}: encoder of width {saved.get('width')}, expected {encoder.width}")
    encoder.load_state_dict(saved["state_dict"])
