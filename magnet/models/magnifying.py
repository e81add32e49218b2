"""One magnifying layer (paper §3.1; docs/method.md §2).

For each parent view n (its ``I_n``, view_size², seen by the heads, and its ``I'_n``, a finer read of the
same ROI that patches are sampled from) and each child k:

1. a localisation head of its own (one per output patch, paper §3.1: the heads of a layer are independent;
   they run as one grouped convolution, head ``n * K_heads + k`` on parent n's image) gives a logit map
   (docs/method.md §2.1); with ``shared_heads`` one network of the layer gives every head's map;
2. spatial sparsemax turns it into a probability map P (docs/method.md §2.2);
3. P gives theta = (s, tx, ty) (eqs. 1-4, docs/method.md §2.3), with t = tanh(mu + atanh(o_k)) where o_k is
   the child's fixed initial offset (docs/method.md §2.4 [choice], the sibling layout);
4. the patch O_{n,k} = sampler(I'_n, affine_grid(theta_{n,k})) on a view_size grid, or final_size at the last
   layer (docs/method.md §2.5).

Steps 1-3 are the layer's zoom strategy (``magnet.models.zoom``: learned, or a control of docs/method.md
§8 that replaces them); the levers of docs/method.md §9 are parts the layer holds
(``magnet.models.zoom_levers``: head input, sibling layout, theta gradient, head-MIL pool), so the layer
itself has no mode switches.

Frozen patch (paper §4.3, docs/method.md §2.7): at layer 2 the first child of each parent has theta =
identity and no head; it is the parent's whole view at I' quality.

Shapes: B slides, N_p parents per slide, K children per parent (K_heads of them with a head); children are
numbered ``n * K + k`` (depth-first order of the tree).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.geometry import theta_matrix
from magnet.layers.heads import HeadMaps
from magnet.layers.samplers import Sampler
from magnet.layers.theta import theta_from_probability
from magnet.models.model_config import MagNetConfig
from magnet.models.zoom import ZoomStrategy, zoom_strategy
from magnet.models.zoom_levers import (
    HeadMilPool,
    build_sibling_layout,
    head_input,
    localisation_heads,
    sibling_offsets,
    strip_masks,
    theta_gradient,
)

__all__ = ["MagnifyingLayer", "MagnifyingOutput", "sibling_offsets", "strip_masks"]


@dataclass
class MagnifyingOutput:
    theta: Tensor  # (B, N_p * K, 3): (s, tx, ty) of every child, frozen ones included
    patches: Tensor  # (B, N_p * K, 3, S, S): the sampled patches
    prob: Tensor  # (B, N_p * K_heads, V, V): the heads' probability maps
    support: Tensor  # (B, N_p * K_heads): number of non-zero pixels of each map (sparsemax support size)
    head_logits: Tensor | None = None  # (B,) head-MIL slide logit of this layer (config head_mil), or None
    scores: Tensor | None = None  # (B, N_p * K_heads, V, V) the heads' raw score maps (learned zoom), or None


class MagnifyingLayer(nn.Module):
    """Magnifying layer ``layer_index`` (1-based) of a MagNet built from ``config``.

    ``num_children`` is P_l; the number of parents per slide, N_{l-1} = prod_{i<l} P_i, comes from
    ``config.patches_per_layer`` unless given. ``zoom`` is the strategy (``MagNet`` shares one among its
    layers); by default the one ``config.zoom_at(layer_index)`` names.
    """

    def __init__(
        self,
        num_children: int,
        config: MagNetConfig,
        layer_index: int,
        num_parents: int | None = None,
        zoom: ZoomStrategy | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= layer_index <= config.num_layers:
            raise ConfigError(f"layer_index={layer_index}: must be in 1..{config.num_layers}")
        if num_children < 1:
            raise ConfigError(f"num_children={num_children}: must be >= 1")
        self.layer_index = layer_index
        self.num_children = num_children
        self.num_parents = config.patches_at(layer_index - 1) if num_parents is None else num_parents
        self.num_frozen = 1 if config.has_frozen_patch(layer_index) else 0
        self.num_heads_per_parent = num_children - self.num_frozen
        self.out_size = config.final_size if layer_index == config.num_layers else config.view_size
        self.min_scale, self.max_scale = config.scales_at(layer_index)
        self.random_scales = config.random_scales_at(layer_index)
        self.spread = config.spread
        self.zoom = zoom_strategy(config, layer_index) if zoom is None else zoom
        self.heads = localisation_heads(config, self.num_parents * self.num_heads_per_parent)
        self.head_input = head_input(config.head_highpass)
        self.layout = build_sibling_layout(
            config, layer_index, self.num_heads_per_parent, self.num_frozen > 0
        )
        self.theta_gradient = theta_gradient(config.theta_grad, config.theta_grad_blur)
        self.sampler = Sampler(config.sampler)
        uses_mil = config.head_mil and self.zoom.uses_heads and self.num_heads_per_parent > 0
        self.head_mil_pool = HeadMilPool(config.head_mil_sharpness) if uses_mil else None
        # Head MIL: the slide logit is pool + bias; the bias lets the pool stay near the heads' small start.
        # It is the layer's own parameter, so checkpoints keep the key ``layers.<i>.mil_bias``.
        self.mil_bias = nn.Parameter(torch.zeros(())) if uses_mil else None

    @property
    def num_heads(self) -> int:
        return self.num_parents * self.num_heads_per_parent

    @property
    def head_mil(self) -> bool:
        """Whether the layer gives a head-MIL slide logit (config head_mil, learned zoom, heads present)."""
        return self.head_mil_pool is not None

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The localisation heads' parameters (not the head-MIL bias)."""
        return self.heads.parameters()

    def head_maps(self, images: Tensor) -> HeadMaps:
        """The heads' raw score maps and tempered logits ``(B, N_p * K_heads, V, V)`` of parent images
        ``(B, N_p, 3, V, V)`` (the head input applied; head ``n * K_heads + k`` sees parent n only)."""
        return self.heads(self.head_input(images))

    def score_maps(self, images: Tensor) -> Tensor:
        """The raw score maps (before the temperature) of parent images: what head MIL pools."""
        return self.head_maps(images).scores

    def mil_logit(self, scores: Tensor, masks: Tensor | None = None) -> Tensor:
        """Head-MIL slide logit ``(B,)`` of raw score maps (``zoom_levers.HeadMilPool``); ``masks``: the
        layout's ``view_masks`` of the parent views, needed where the strips depend on the view."""
        if self.head_mil_pool is None or self.mil_bias is None:
            raise ValueError(f"layer {self.layer_index} has no head MIL (config head_mil, learned zoom)")
        return self.head_mil_pool(scores, self.layout, self.mil_bias, masks)

    def theta_from_maps(self, prob: Tensor) -> Tensor:
        """Theta ``(..., K_heads, 3)`` of probability maps ``(..., K_heads, V, V)`` (eqs. 1-4, offsets)."""
        return theta_from_probability(
            prob,
            min_scale=self.min_scale,
            spread=self.spread,
            offset=self.layout.offsets,
            max_scale=self.max_scale,
        )

    def forward(
        self, images: Tensor, reads: Tensor, generator: torch.Generator | None = None
    ) -> MagnifyingOutput:
        """``images`` I ``(B, N_p, 3, V, V)``, ``reads`` I' ``(B, N_p, 3, R, R)`` (no grad needed)."""
        batch, parents = images.shape[:2]
        if parents != self.num_parents or reads.shape[:2] != images.shape[:2]:
            raise ValueError(
                f"layer {self.layer_index} expects {self.num_parents} parents per slide, got images "
                f"{tuple(images.shape)} and reads {tuple(reads.shape)}"
            )
        placement = self.zoom.place(self, images, generator)
        theta_heads = self.theta_gradient.admit(placement.theta)  # (B, N_p, K_heads, 3)
        if self.num_frozen:
            identity = theta_heads.new_tensor([1.0, 0.0, 0.0]).expand(batch, parents, self.num_frozen, 3)
            theta_heads = torch.cat([identity, theta_heads], dim=2)
        theta = theta_heads.reshape(batch, parents * self.num_children, 3)

        size = self.out_size
        affine = theta_matrix(theta.reshape(-1, 3))[:, :2, :]  # (B * N_p * K, 2, 3), eq. 4
        grid = F.affine_grid(affine, [affine.shape[0], 3, size, size], align_corners=False)
        patches = self._sample(reads.detach(), grid, generator)
        patches = patches.view(batch, parents * self.num_children, 3, size, size)
        support = (placement.prob > 0).flatten(-2).sum(-1)
        return MagnifyingOutput(
            theta=theta,
            patches=patches,
            prob=placement.prob,
            support=support,
            head_logits=placement.head_logit,
            scores=placement.scores,
        )

    def _sample(self, reads: Tensor, grid: Tensor, generator: torch.Generator | None) -> Tensor:
        """Child n * K + k samples its parent n's I'; the theta-gradient part decides theta's gradient."""

        def sample(per_parent: Tensor) -> Tensor:
            per_child = per_parent.unsqueeze(2).expand(-1, -1, self.num_children, -1, -1, -1).flatten(0, 2)
            return self.sampler(per_child, grid, generator=generator)

        return self.theta_gradient.sample(sample, reads, grid)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer_index}, parents={self.num_parents}, children={self.num_children}, "
            f"frozen={self.num_frozen}, heads={self.num_heads}, out_size={self.out_size}, zoom={self.zoom!r}"
        )
