"""Localisation heads of a magnifying layer: one logit map per output patch.

MagNet paper §3.1 ("Convolutional layers", "Spatial Transformer"): every output patch has its own stack of
three Inception-style convolutional layers on the 56 x 56 input, and the last layer's map goes through a
spatial sparsemax. METHOD.md §2.1 and §2.4 fix the details used here:

- the heads of one layer run together as grouped convolutions (head h = group h) and are independent;
- the final 1x1 convolution to one logit map per head has no BN/ReLU and is initialised tiny
  (weights ~ N(0, init_std^2), bias 0): sparsemax support depends on the absolute logit scale, and O(1)
  logits start one-hot, clamp s to its floor and kill every gradient ("sparsemax collapse trap");
- an optional learnable temperature exp(beta) per head, beta = 0 at start [choice], lets a head sharpen its
  map without first growing its weights.

``num_heads = 0`` is allowed (a layer whose only child is the frozen identity patch, METHOD.md §2.7): the
module then has no parameters and returns ``(B, 0, H, W)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.layers.inception import InceptionBlock

__all__ = ["LocalisationHeads"]


class LocalisationHeads(nn.Module):
    """``num_heads`` independent Inception heads: image ``(B, C, H, W)`` -> logits ``(B, heads, H, W)``."""

    def __init__(
        self,
        num_heads: int,
        in_channels: int = 3,
        branch_channels: int = 8,
        num_blocks: int = 3,
        init_std: float = 1e-3,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__()
        if num_heads < 0:
            raise ConfigError(f"num_heads={num_heads}: must be >= 0")
        if num_blocks < 1:
            raise ConfigError(f"num_blocks={num_blocks}: a head needs at least one Inception block")
        if init_std < 0:
            raise ConfigError(f"init_std={init_std}: must be >= 0")
        self.num_heads = num_heads
        self.in_channels = in_channels
        self.learn_temperature = learn_temperature
        self.blocks = nn.Sequential()
        self.to_logits: nn.Conv2d | None = None
        self.log_temperature: nn.Parameter | None = None
        if num_heads == 0:
            return
        channels = in_channels
        for _ in range(num_blocks):
            block = InceptionBlock(channels, branch_channels, groups=num_heads)
            self.blocks.append(block)
            channels = 4 * branch_channels
        to_logits = nn.Conv2d(num_heads * channels, num_heads, kernel_size=1, groups=num_heads, bias=True)
        nn.init.normal_(to_logits.weight, mean=0.0, std=init_std)
        assert to_logits.bias is not None
        nn.init.zeros_(to_logits.bias)
        self.to_logits = to_logits
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.zeros(num_heads))

    def forward(self, image: Tensor) -> Tensor:
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(
                f"expected an image (B, {self.in_channels}, H, W), got shape {tuple(image.shape)}"
            )
        batch, _, height, width = image.shape
        if self.to_logits is None:
            return image.new_zeros((batch, 0, height, width))
        # Every head sees the whole image: repeat it group-major (head h gets channels h*C .. h*C + C - 1).
        features = self.blocks(image.repeat(1, self.num_heads, 1, 1))
        logits: Tensor = self.to_logits(features)
        if self.log_temperature is not None:
            logits = logits * self.log_temperature.exp().view(1, -1, 1, 1)
        return logits
