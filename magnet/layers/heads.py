"""Localisation heads of a magnifying layer: one logit map per output patch.

MagNet paper §3.1 ("Convolutional layers", "Spatial Transformer"): every output patch has its own stack of
three Inception-style convolutional layers on the 56 x 56 input, and the last layer's map goes through a
spatial sparsemax. docs/method.md §2.1 and §2.4 fix the details used here:

- the heads of one layer run together as grouped convolutions (head h = group h) and are independent;
- the final 1x1 convolution to one logit map per head has no BN/ReLU and is initialised tiny
  (weights ~ N(0, init_std^2), bias 0): sparsemax support depends on the absolute logit scale, and O(1)
  logits start one-hot, clamp s to its floor and kill every gradient ("sparsemax collapse trap");
- an optional learnable temperature exp(beta) per head, beta = 0 at start [choice], lets a head sharpen its
  map without first growing its weights.

``forward`` is the one way in: it takes the images of the layer's parents and returns both the raw score
maps (before the temperature; head MIL pools these, docs/method.md §9) and the tempered logits (what goes
into the sparsemax), so no caller needs the heads' inner modules.

``num_heads = 0`` is allowed (a layer whose only child is the frozen identity patch, docs/method.md §2.7):
the module then has no parameters and returns empty ``(B, 0, H, W)`` maps.

``SharedLocalisationHeads`` [choice, not the paper, docs/method.md §9, ``model.shared_heads``] runs one
network per layer instead: every head of the layer reads its parent's map from the same weights, so siblings
of one parent share a map (the sibling layout's strips make their boxes differ) and the layer's network learns
from every head's patches at once, not from one head's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.layers.inception import InceptionBlock

__all__ = ["HeadMaps", "LocalisationHeads", "SharedLocalisationHeads"]


@dataclass
class HeadMaps:
    """What the heads compute for B slides: one map per head, ``(B, num_heads, H, W)`` each."""

    scores: Tensor  # the last 1x1 convolution's output, before the temperature
    logits: Tensor  # scores * exp(beta) per head: the input of the spatial sparsemax


class LocalisationHeads(nn.Module):
    """``num_heads`` independent Inception heads over the images of the layer's parents.

    ``forward(images)``: ``images`` ``(B, N_p, C, H, W)`` holds the B slides' N_p parent images; the heads
    split evenly over the parents, head ``n * (num_heads / N_p) + k`` seeing parent n only (the children of
    a parent are numbered after it, depth-first). A 4-D ``(B, C, H, W)`` image is one parent seen by every
    head.
    """

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
        networks = self.num_networks(num_heads)
        channels = in_channels
        for _ in range(num_blocks):
            block = InceptionBlock(channels, branch_channels, groups=networks)
            self.blocks.append(block)
            channels = 4 * branch_channels
        to_logits = nn.Conv2d(networks * channels, networks, kernel_size=1, groups=networks, bias=True)
        nn.init.normal_(to_logits.weight, mean=0.0, std=init_std)
        assert to_logits.bias is not None
        nn.init.zeros_(to_logits.bias)
        self.to_logits = to_logits
        if learn_temperature:
            self.log_temperature = nn.Parameter(torch.zeros(num_heads))

    def forward(self, images: Tensor) -> HeadMaps:
        if images.dim() == 4:
            images = images.unsqueeze(1)
        if images.dim() != 5 or images.shape[2] != self.in_channels:
            raise ValueError(
                f"expected parent images (B, N_p, {self.in_channels}, H, W) or an image "
                f"(B, {self.in_channels}, H, W), got shape {tuple(images.shape)}"
            )
        batch, parents, _, height, width = images.shape
        if self.to_logits is None:
            empty = images.new_zeros((batch, 0, height, width))
            return HeadMaps(scores=empty, logits=empty)
        if self.num_heads % parents:
            raise ValueError(f"{self.num_heads} heads do not split evenly over {parents} parents")
        scores = self._score_maps(images, self.num_heads // parents)
        logits = scores
        if self.log_temperature is not None:
            logits = scores * self.log_temperature.exp().view(1, -1, 1, 1)
        return HeadMaps(scores=scores, logits=logits)

    @staticmethod
    def num_networks(num_heads: int) -> int:
        """How many independent networks the grouped convolutions hold: one per head (paper §3.1)."""
        return num_heads

    def _score_maps(self, images: Tensor, per_parent: int) -> Tensor:
        """``(B, num_heads, H, W)`` raw scores of parent images ``(B, N_p, C, H, W)``."""
        batch, _, channels, height, width = images.shape
        # Group-major input: head h gets channels h*C .. h*C + C - 1, a copy of its own parent's image.
        per_head = images.unsqueeze(2).expand(-1, -1, per_parent, -1, -1, -1)
        grouped = per_head.reshape(batch, self.num_heads * channels, height, width)
        assert self.to_logits is not None
        return self.to_logits(self.blocks(grouped))  # type: ignore[no-any-return]


class SharedLocalisationHeads(LocalisationHeads):
    """One Inception network for all ``num_heads`` heads of a layer: it maps each parent image once, and
    every head of that parent reads the same score map (the temperatures stay one per head).

    Why [choice]: the paper's heads are independent, so each learns only from the patches it placed itself;
    a last-layer head of the 3-layer tree sees one final patch per slide and training pass, too few to learn a
    texture from a head-value or head-MIL target in a CPU budget. Shared weights pool the layer's heads'
    samples (K_heads x N_p times as many) for a map that asks one question everywhere: is it worth zooming
    here? With strips (``model.sibling_layout``) each sibling still takes its own part of the map.
    """

    @staticmethod
    def num_networks(num_heads: int) -> int:
        return 1

    def _score_maps(self, images: Tensor, per_parent: int) -> Tensor:
        batch, parents, channels, height, width = images.shape
        assert self.to_logits is not None
        maps = self.to_logits(self.blocks(images.reshape(batch * parents, channels, height, width)))
        per_head = maps.view(batch, parents, 1, height, width).expand(-1, -1, per_parent, -1, -1)
        return per_head.reshape(batch, self.num_heads, height, width)
