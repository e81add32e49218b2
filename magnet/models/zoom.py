"""Where a magnifying layer's boxes come from: one strategy per zoom mode (config key ``zoom``).

A magnifying layer asks its strategy for the theta of its headed children; the frozen child, the sampling
and the next layer's wiring (docs/method.md §2.5-§2.7) are the same in every mode, so every mode reads the
same pixels per slide.

- ``learned`` (paper §3.1; docs/method.md §2.1-§2.3): the heads' logit maps go through the spatial
  sparsemax and theta is read off the probability map (eqs. 1-4; with ``box_centre=peak`` [choice] the box
  goes where it covers the most of the map, ``magnet.layers.theta.peak_translation``). The only mode that
  evaluates, and trains, the heads; with head MIL it also gives the layer's slide logit (docs/method.md §9).
  With ``explore`` > 0 [choice, docs/method.md §9] a share of its boxes go, in training, to random places of
  their strips (:class:`ExploringZoom`); with ``box_grid`` [choice] its boxes' centres go, in evaluation, to
  their parent view's pixel grid (``magnet.layers.theta.snap_translation``).
- ``fixed`` (docs/method.md §8, a control): theta of a flat map on each head's strip plus the sibling
  offsets, i.e. what heads with exactly flat logits give; independent of training, and of the image except
  where the strips follow the view's tissue (``sibling_layout=tissue_strips``).
- ``random`` (§8, a control): s log-uniform in [random_zoom_min_scale, max_scale], t uniform in
  (-1, 1) * (1 - s) so the box lies inside its parent, drawn afresh each call.
- ``oracle`` (§8, a control): layers 1..L-1 as ``fixed``; the final ROIs come from outside, placed by
  ground truth (``final_rois`` of ``MagNet.forward``, built by ``magnet.inference.oracle``), and the final
  patches are read there directly (``MagNet`` does that read; the strategy checks the ROIs).

Under the learned zoom, ``learned_layers`` [choice, docs/method.md §9] gives the layers it leaves out the
``fixed`` strategy (``zoom_strategy(config, layer)``), so one layer's learning can be measured on its own.

Controls give the prob maps as flat placeholders of the learned mode's shape (support: the head's strip)
and no gradient to theta. ``ZOOM_STRATEGIES`` maps each name of ``ZOOMS`` to its strategy class.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from magnet.layers.heads import HeadMaps
from magnet.layers.sparsemax import spatial_sparsemax
from magnet.layers.theta import BoxCentre, peak_translation, snap_translation
from magnet.models.model_config import MagNetConfig, Zoom
from magnet.models.zoom_levers import SiblingLayout

__all__ = [
    "ZOOM_STRATEGIES",
    "ExploringZoom",
    "FixedZoom",
    "GivenFinalZoom",
    "LearnedZoom",
    "Placement",
    "RandomZoom",
    "ZoomSite",
    "ZoomStrategy",
    "zoom_strategy",
]


@dataclass
class Placement:
    """A strategy's answer for one layer: B slides, N_p parents, K_heads headed children per parent."""

    theta: Tensor  # (B, N_p, K_heads, 3): (s, tx, ty) of each headed child
    prob: Tensor  # (B, N_p * K_heads, V, V): the probability maps (diagnostics; flat in the controls)
    head_logit: Tensor | None = None  # (B,) head-MIL slide logit of the layer, learned mode with head MIL
    scores: Tensor | None = None  # (B, N_p * K_heads, V, V): the heads' raw score maps, learned mode only


class ZoomSite(Protocol):
    """What a strategy uses of its magnifying layer."""

    num_heads_per_parent: int
    layout: SiblingLayout
    random_scales: tuple[float, float]  # the random control's range of s at this layer
    training: bool  # the module's mode: exploration happens in training only

    @property
    def head_mil(self) -> bool:
        """Whether the layer pools its heads' score maps into a slide logit."""

    def head_maps(self, images: Tensor) -> HeadMaps:
        """The heads' maps of parent images ``(B, N_p, 3, V, V)``."""

    def mil_logit(self, scores: Tensor, masks: Tensor | None = None) -> Tensor:
        """The head-MIL slide logit of raw score maps (``masks``: the layout's masks of their views)."""

    def theta_from_maps(self, prob: Tensor) -> Tensor:
        """Theta ``(..., K_heads, 3)`` of probability maps ``(..., K_heads, V, V)``."""


class ZoomStrategy(ABC):
    """A zoom mode. ``uses_heads``: the heads are evaluated and can learn. ``needs_final_rois``: the final
    ROIs must be given to ``MagNet.forward``. ``draws_at_random``: it draws from the forward's generator in
    evaluation mode too (``magnet.inference.draws`` gives each slide its own)."""

    name: ClassVar[Zoom]
    uses_heads: ClassVar[bool] = False
    needs_final_rois: ClassVar[bool] = False
    draws_at_random: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: MagNetConfig) -> ZoomStrategy:
        return cls()

    @abstractmethod
    def place(self, site: ZoomSite, images: Tensor, generator: torch.Generator | None) -> Placement:
        """The headed children's theta for parent images ``(B, N_p, 3, V, V)``."""

    def given_final_rois(
        self, final_rois: Tensor | None, shape: tuple[int, ...], device: torch.device
    ) -> Tensor | None:
        """``final_rois`` checked for this mode (only the oracle takes them), float64 on ``device``."""
        if final_rois is not None:
            raise ValueError(f"final_rois is only for model.zoom='oracle', not zoom={self.name!r}")
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _flat_prob(site: ZoomSite, images: Tensor) -> Tensor:
    """Each headed child's flat map on its strip of its parent's view ``(B, N_p * K_heads, V, V)``."""
    return site.layout.flat_maps(site.layout.view_masks(images)).to(images.device)


class LearnedZoom(ZoomStrategy):
    """Heads -> spatial sparsemax -> theta (paper §3.1, eqs. 1-4; docs/method.md §2.1-§2.3)."""

    name = "learned"
    uses_heads = True

    def __init__(self, box_centre: BoxCentre = "mean", box_grid: bool = False) -> None:
        self.box_centre = box_centre
        self.box_grid = box_grid

    @classmethod
    def from_config(cls, config: MagNetConfig) -> ZoomStrategy:
        if config.explore > 0:
            return ExploringZoom.from_config(config)
        return cls(config.box_centre, config.box_grid)

    def place(self, site: ZoomSite, images: Tensor, generator: torch.Generator | None) -> Placement:
        batch, parents = images.shape[:2]
        maps = site.head_maps(images)
        masks = site.layout.view_masks(images)  # of the view itself, before any head input transform
        # Float32 for the sparsemax threshold and the moments, whatever autocast does around it.
        prob = spatial_sparsemax(site.layout.confine(maps.logits, masks=masks).float())
        theta = self.theta_from_maps(
            site, prob.view(batch, parents, site.num_heads_per_parent, *prob.shape[-2:])
        )
        if self.box_grid and not site.training:
            theta = snap_translation(theta, images.shape[-1])
        head_logit = site.mil_logit(maps.scores, masks) if site.head_mil else None
        return Placement(theta=theta, prob=prob, head_logit=head_logit, scores=maps.scores)

    def theta_from_maps(self, site: ZoomSite, prob: Tensor) -> Tensor:
        """Theta ``(..., K_heads, 3)`` of maps ``(..., K_heads, V, V)``: eqs. 1-4, the centre moved to the
        densest box where ``box_centre`` is ``peak`` (the scale stays eq. 1's)."""
        theta = site.theta_from_maps(prob)
        if self.box_centre == "mean":
            return theta
        offsets = site.layout.offsets.to(prob.device)
        translation = peak_translation(prob, theta[..., 0], offsets if bool(offsets.any()) else None)
        return torch.cat([theta[..., :1], translation], dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(box_centre={self.box_centre!r}, box_grid={self.box_grid})"


class ExploringZoom(LearnedZoom):
    """``learned``, but in training each headed child's box goes, with probability ``explore``, to a point
    drawn from its head's flat map (its strip of the parent view's tissue, what ``fixed`` spreads evenly)
    instead of where the head's map points; the scale stays the head's. Epsilon-greedy exploration
    (Sutton & Barto, "Reinforcement Learning", 2nd ed., §2.2): head value fits the score maps on the places
    visited, and without it a head never learns what lies where it does not already look. The translation
    is the one a head whose map is a single pixel at the drawn point would give, so every box stays one a
    head could place. Evaluation mode places as ``learned``."""

    def __init__(self, explore: float, box_centre: BoxCentre = "mean", box_grid: bool = False) -> None:
        if not 0 < explore < 1:
            raise ValueError(f"explore={explore}: must lie in (0, 1)")
        super().__init__(box_centre, box_grid)
        self.explore = explore

    @classmethod
    def from_config(cls, config: MagNetConfig) -> ZoomStrategy:
        return cls(config.explore, config.box_centre, config.box_grid)

    def place(self, site: ZoomSite, images: Tensor, generator: torch.Generator | None) -> Placement:
        placement = super().place(site, images, generator)
        if not site.training:
            return placement
        flat = _flat_prob(site, images)  # (B, N_p * K_heads, V, V), each sums to 1
        device = generator.device if generator is not None else images.device
        weights = flat.flatten(-2).reshape(-1, flat.shape[-2] * flat.shape[-1]).float().to(device)
        points = torch.multinomial(weights, 1, generator=generator)
        one_hot = torch.zeros_like(weights).scatter_(1, points, 1.0).to(images.device).view_as(flat)
        theta = placement.theta
        explored = self.theta_from_maps(
            site, one_hot.view(*theta.shape[:-1], *flat.shape[-2:]).to(theta.dtype)
        )
        explored = torch.cat([theta[..., :1], explored[..., 1:]], dim=-1)
        chosen = torch.rand((*theta.shape[:-1], 1), generator=generator, device=device) < self.explore
        placement.theta = torch.where(chosen.to(images.device), explored, theta)
        return placement

    def __repr__(self) -> str:
        return (f"ExploringZoom(explore={self.explore}, box_centre={self.box_centre!r}, "
                f"box_grid={self.box_grid})")


class FixedZoom(ZoomStrategy):
    """The untrained heads' layout: theta of a flat map plus the sibling offsets (docs/method.md §8). The
    flat map lies on each head's strip of its parent's view: the same for every view, except where the
    layout's strips follow the view's tissue (``sibling_layout=tissue_strips``)."""

    name: ClassVar[Zoom] = "fixed"

    def place(self, site: ZoomSite, images: Tensor, generator: torch.Generator | None) -> Placement:
        batch, parents = images.shape[:2]
        flat = _flat_prob(site, images)
        per_parent = flat.reshape(batch, parents, site.num_heads_per_parent, *flat.shape[-2:])
        theta = site.theta_from_maps(per_parent)
        return Placement(theta=theta, prob=flat)


class RandomZoom(ZoomStrategy):
    """Random boxes inside the parent (docs/method.md §8): s log-uniform in the layer's ``random_scales``
    ([random_zoom_min_scale, max_scale], or the layer's fixed s under ``layer_scales``), t uniform in
    (-1, 1) * (1 - s); drawn from the forward's generator (on its own device) or torch's global RNG."""

    name = "random"
    draws_at_random = True

    def place(self, site: ZoomSite, images: Tensor, generator: torch.Generator | None) -> Placement:
        batch, parents = images.shape[:2]
        flat = _flat_prob(site, images)
        shape = (batch, parents, site.num_heads_per_parent)
        device = generator.device if generator is not None else images.device
        draws = torch.rand((*shape, 3), generator=generator, device=device).to(images.device)
        # log-uniform in (min, max]: exp(log max + u (log min - log max)), u in [0, 1)
        low, high = (math.log(s) for s in site.random_scales)
        scale = torch.exp(high + draws[..., :1] * (low - high))
        translation = (2 * draws[..., 1:] - 1) * (1 - scale)
        return Placement(theta=torch.cat([scale, translation], dim=-1), prob=flat)


class GivenFinalZoom(FixedZoom):
    """The oracle control (docs/method.md §8): layers 1..L-1 as ``fixed``; the final ROIs are given from
    outside (``magnet.inference.oracle.OracleZoom`` places them on ground truth)."""

    name = "oracle"
    needs_final_rois = True

    def given_final_rois(
        self, final_rois: Tensor | None, shape: tuple[int, ...], device: torch.device
    ) -> Tensor | None:
        if final_rois is None:
            raise ValueError(
                "model.zoom='oracle' places the final patches by ground truth: pass final_rois "
                "(B, N_L, 3, 3) canvas ROIs (magnet.inference.oracle.OracleZoom.rois builds them)"
            )
        if tuple(final_rois.shape) != shape:
            raise ValueError(f"final_rois must have shape {shape}, got {tuple(final_rois.shape)}")
        return final_rois.detach().to(device=device, dtype=torch.float64)


ZOOM_STRATEGIES: Mapping[Zoom, type[ZoomStrategy]] = {
    "learned": LearnedZoom,
    "fixed": FixedZoom,
    "random": RandomZoom,
    "oracle": GivenFinalZoom,
}


def zoom_strategy(config: MagNetConfig, layer: int | None = None) -> ZoomStrategy:
    """The strategy of ``config.zoom``, or of layer ``layer``'s mode (``config.zoom_at``: the fixed layout
    at a layer that ``learned_layers`` leaves out)."""
    return ZOOM_STRATEGIES[config.zoom if layer is None else config.zoom_at(layer)].from_config(config)
