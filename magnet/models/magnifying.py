"""One magnifying layer (paper §3.1; METHOD.md §2).

For each parent view n (its ``I_n``, view_size², seen by the heads, and its ``I'_n``, a finer read of the
same ROI that patches are sampled from) and each child k:

1. a localisation head of its own (one per output patch, paper §3.1: the heads of a layer are independent;
   they run as one grouped convolution, head ``n * K_heads + k`` on parent n's image) gives a logit map;
2. spatial sparsemax turns it into a probability map P (METHOD.md §2.2);
3. P gives theta = (s, tx, ty) (eqs. 1-4, METHOD.md §2.3), with t = tanh(mu + atanh(o_k)) where o_k is the
   child's fixed initial offset (METHOD.md §2.4 [choice], see :func:`sibling_offsets`);
4. the patch O_{n,k} = sampler(I'_n, affine_grid(theta_{n,k})) on a view_size grid, or final_size at the last
   layer (METHOD.md §2.5).

Frozen patch (paper §4.3, METHOD.md §2.7): at layer 2 the first child of each parent has theta = identity and
no head; it is the parent's whole view at I' quality.

Issue 6 levers ([choice], not the paper; config keys, off by default): ``sibling_layout="strips"`` confines
each headed child's map to its own strip of the parent instead of offsetting its box (see
:func:`strip_masks`); ``head_mil`` adds a slide logit per layer, the LSE pool of the heads' raw logit maps
over heads and pixels, trained against the slide label; ``head_highpass`` shows the heads local contrast,
I - blur(I) + 0.5; ``theta_grad_blur`` takes theta's gradient from a blurred I' (``magnet.layers.blur``)
and ``theta_grad=false`` cuts that gradient, leaving the heads to ``head_mil``.

Zoom controls (issue 6, config key ``zoom`` [choice, not the paper]): "fixed" replaces steps 1-3 by the
untrained heads' layout (a flat map plus the offsets), "random" by random boxes inside the parent; the
frozen patch and step 4 stay as they are, so the controls read the same pixels per slide as learned zoom.

Shapes: B slides, N_p parents per slide, K children per parent (K_heads of them with a head); children are
numbered ``n * K + k`` (depth-first order of the tree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.geometry import theta_matrix
from magnet.layers.blur import gaussian_blur, low_pass_gradient
from magnet.layers.heads import LocalisationHeads
from magnet.layers.samplers import Sampler
from magnet.layers.sparsemax import spatial_sparsemax
from magnet.layers.theta import theta_from_probability
from magnet.models.model_config import MagNetConfig

__all__ = ["MagnifyingLayer", "MagnifyingOutput", "sibling_offsets", "strip_masks"]

# Logit given to pixels outside a head's strip: far below any trained logit, so sparsemax gives them 0, yet
# finite, so the sparsemax sort and its cumulative sums stay free of inf - inf.
_OUTSIDE_STRIP = -1e4


@dataclass
class MagnifyingOutput:
    theta: Tensor  # (B, N_p * K, 3): (s, tx, ty) of every child, frozen ones included
    patches: Tensor  # (B, N_p * K, 3, S, S): the sampled patches
    prob: Tensor  # (B, N_p * K_heads, V, V): the heads' probability maps
    support: Tensor  # (B, N_p * K_heads): number of non-zero pixels of each map (sparsemax support size)
    head_logits: Tensor | None = None  # (B,) head-MIL slide logit of this layer (config head_mil), or None


def sibling_offsets(num_heads: int, offset: float, layer_index: int, has_frozen: bool) -> Tensor:
    """Initial offsets o_k ``(num_heads, 2)`` of the headed children of one parent [choice, METHOD.md §2.4].

    Layout: the children sit at equal angles on the square of half-side ``offset`` (the L-inf circle), at
    angles pi/4 + 2 pi k / K_heads + (l - 1) pi / 3. Turning the layout by 60 degrees per layer spreads the
    tree of untrained heads in several directions, and no two layers' offsets are collinear for up to 3
    layers, so no path of offsets cancels another (with a quarter turn, +o at layer 1 then -o at layer 3 would
    land on the same box as -o then +o). A lone headed child sits at the centre, unless a frozen sibling
    already holds the centre, in which case it goes to the ring.
    """
    if num_heads == 0:
        return torch.zeros(0, 2)
    if num_heads == 1 and not has_frozen:
        return torch.zeros(1, 2)
    k = torch.arange(num_heads, dtype=torch.float64)
    angle = math.pi / 4 + 2 * math.pi * k / num_heads + (layer_index - 1) * math.pi / 3
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    on_square = direction / direction.abs().amax(dim=-1, keepdim=True)
    return (offset * on_square).float()


def strip_masks(num_heads: int, layer_index: int, size: int, strips: bool) -> Tensor:
    """Where each headed child of one parent may look: ``(num_heads, size, size)`` booleans [choice].

    ``strips``: the parent's map is cut into ``num_heads`` strips of (nearly) equal width, side by side along
    x at odd layers and along y at even ones (so a tree of layers alternates the cut); head k gets strip k.
    Otherwise (or with one head) every head sees the whole map.
    """
    mask = torch.ones(num_heads, size, size, dtype=torch.bool)
    if not strips or num_heads <= 1:
        return mask
    mask.zero_()
    edges = [round(k * size / num_heads) for k in range(num_heads + 1)]
    for k in range(num_heads):
        if layer_index % 2 == 1:
            mask[k, :, edges[k] : edges[k + 1]] = True
        else:
            mask[k, edges[k] : edges[k + 1], :] = True
    return mask


class MagnifyingLayer(nn.Module):
    """Magnifying layer ``layer_index`` (1-based) of a MagNet built from ``config``.

    ``num_children`` is P_l; the number of parents per slide, N_{l-1} = prod_{i<l} P_i, comes from
    ``config.patches_per_layer`` unless given.
    """

    offsets: Tensor
    strip_mask: Tensor

    def __init__(
        self, num_children: int, config: MagNetConfig, layer_index: int, num_parents: int | None = None
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
        self.min_scale = config.min_scale
        self.max_scale = config.max_scale
        self.spread = config.spread
        self.zoom = config.zoom  # "learned" | "fixed" | "random" (issue 6 controls, see _control_theta)
        self.random_min_scale = config.random_zoom_min_scale
        self.theta_grad_blur = config.theta_grad_blur
        self.theta_grad = config.theta_grad
        self.head_highpass = config.head_highpass
        self.mil_sharpness = config.head_mil_sharpness
        self.heads = LocalisationHeads(
            self.num_parents * self.num_heads_per_parent,
            in_channels=3,
            branch_channels=config.head_branch_channels,
            num_blocks=config.head_blocks,
            init_std=config.head_init_std,
            learn_temperature=config.learn_temperature,
        )
        self.sampler = Sampler(config.sampler)  # type: ignore[arg-type]
        strips = config.sibling_layout == "strips"
        if strips:  # the strips keep siblings apart; a box goes exactly where its head's map points
            offsets = torch.zeros(self.num_heads_per_parent, 2)
        else:
            offsets = sibling_offsets(
                self.num_heads_per_parent, config.sibling_offset, layer_index, self.num_frozen > 0
            )
        self.register_buffer("offsets", offsets, persistent=False)  # (K_heads, 2)
        masks = strip_masks(self.num_heads_per_parent, layer_index, config.view_size, strips)
        self.register_buffer("strip_mask", masks, persistent=False)  # (K_heads, V, V)
        self.has_strips = not bool(masks.all())  # all True (no strips): masking is a no-op, skip it
        self.head_mil = config.head_mil and config.zoom == "learned" and self.num_heads_per_parent > 0
        # Head MIL: the slide logit is pool + bias; the bias lets the pool stay near the heads' small start.
        self.mil_bias = nn.Parameter(torch.zeros(())) if self.head_mil else None

    def _control_theta(self, images: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The controls' (prob, theta_heads) without evaluating the heads (issue 6, config key ``zoom``).

        "fixed": theta of a flat map (on each head's strip, if any) plus the sibling offsets, i.e. what heads
        with exactly flat logits give (tiny-initialised heads at step 0, but independent of the image and of
        training). "random": s log-uniform in [random_zoom_min_scale, max_scale], t uniform in
        (-1, 1) * (1 - s), so the box lies inside its parent; drawn from ``generator`` (on its own device)
        or torch's global RNG, afresh each call. Neither carries a gradient. ``prob`` is the flat map in both
        (a placeholder of the learned mode's shape; its support is the head's whole strip).
        """
        batch, parents = images.shape[:2]
        shape = (batch, parents, self.num_heads_per_parent)
        per_head = self._flat_maps().to(images.device)  # (K_heads, V, V)
        flat = per_head.repeat(parents, 1, 1).unsqueeze(0).expand(batch, -1, -1, -1)
        if self.zoom == "fixed":
            theta = theta_from_probability(
                per_head.unsqueeze(0),
                min_scale=self.min_scale,
                spread=self.spread,  # type: ignore[arg-type]
                offset=self.offsets,
                max_scale=self.max_scale,
            )  # (1, K_heads, 3): the same for every slide and parent
            return flat, theta.view(1, 1, self.num_heads_per_parent, 3).expand(*shape, 3).contiguous()
        device = generator.device if generator is not None else images.device
        draws = torch.rand((*shape, 3), generator=generator, device=device).to(images.device)
        # log-uniform in (min, max]: exp(log max + u (log min - log max)), u in [0, 1)
        low, high = math.log(self.random_min_scale), math.log(self.max_scale)
        scale = torch.exp(high + draws[..., :1] * (low - high))
        translation = (2 * draws[..., 1:] - 1) * (1 - scale)
        return flat, torch.cat([scale, translation], dim=-1)

    def _flat_maps(self) -> Tensor:
        """``(K_heads, V, V)``: each headed child's flat map, uniform on its strip (or the whole map)."""
        mask = self.strip_mask.float()
        return mask / mask.sum(dim=(-2, -1), keepdim=True)

    @property
    def num_heads(self) -> int:
        return self.num_parents * self.num_heads_per_parent

    def score_maps(self, images: Tensor) -> Tensor:
        """Raw maps ``(B, N_p * K_heads, V, V)`` (no temperature yet) of parents ``(B, N_p, 3, V, V)``.

        Head ``n * K_heads + k`` sees only parent n. ``LocalisationHeads.forward`` feeds one image to every
        head; here each group gets its own parent's image, through the same grouped blocks.
        """
        batch, parents, channels, height, width = images.shape
        if self.num_heads == 0:
            return images.new_zeros(batch, 0, height, width)
        if self.head_highpass > 0:  # local contrast (config head_highpass)
            flat = images.flatten(0, 1)
            images = (0.5 + flat - gaussian_blur(flat, self.head_highpass)).view_as(images)
        per_head = images.unsqueeze(2).expand(-1, -1, self.num_heads_per_parent, -1, -1, -1)
        grouped = per_head.reshape(batch, self.num_heads * channels, height, width)
        assert self.heads.to_logits is not None
        scores: Tensor = self.heads.to_logits(self.heads.blocks(grouped))
        return scores

    def map_logits(self, images: Tensor) -> Tensor:
        """The maps that go into sparsemax, from parent images (see :meth:`_map_logits`)."""
        return self._map_logits(self.score_maps(images))

    def _map_logits(self, scores: Tensor) -> Tensor:
        """Score maps times the temperature, -1e4 outside each head's strip."""
        if self.heads.log_temperature is not None:
            scores = scores * self.heads.log_temperature.exp().view(1, -1, 1, 1)
        return self._mask_strips(scores)

    def _mask_strips(self, maps: Tensor, fill: float = _OUTSIDE_STRIP) -> Tensor:
        if not self.has_strips:
            return maps
        parents = maps.shape[1] // max(self.num_heads_per_parent, 1)
        inside = self.strip_mask.repeat(parents, 1, 1)  # head n * K_heads + k gets strip k
        return maps.masked_fill(~inside, fill)

    def mil_logit(self, scores: Tensor) -> Tensor:
        """Head MIL slide logit ``(B,)``: (1/r) log mean exp(r z) over every head's strip pixels, plus a bias.

        The log-sum-exp pool (Pinheiro & Collobert, "From image-level to pixel-level labeling with
        convolutional networks", CVPR 2015) sits between max and mean; r = ``head_mil_sharpness``.
        """
        assert self.mil_bias is not None
        r = self.mil_sharpness
        inside = self._mask_strips(scores.float() * r, fill=float("-inf")).flatten(1)  # (B, heads * V * V)
        count = float(self.strip_mask.sum()) * (scores.shape[1] // self.num_heads_per_parent)
        return (torch.logsumexp(inside, dim=1) - math.log(count)) / r + self.mil_bias

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
        mil_logit = None
        if self.zoom == "learned":
            scores = self.score_maps(images)  # (B, N_p * K_heads, V, V)
            logits = self._map_logits(scores)
            if self.head_mil:
                mil_logit = self.mil_logit(scores)
            # Float32 for the sparsemax threshold and the moments, whatever autocast does around it.
            prob = spatial_sparsemax(logits.float())
            theta_heads = theta_from_probability(
                prob.view(batch, parents, self.num_heads_per_parent, *prob.shape[-2:]),
                min_scale=self.min_scale,
                spread=self.spread,  # type: ignore[arg-type]
                offset=self.offsets,
                max_scale=self.max_scale,
            )  # (B, N_p, K_heads, 3)
            if not self.theta_grad:  # config theta_grad=false: heads learn from head_mil only
                theta_heads = theta_heads.detach()
        else:
            prob, theta_heads = self._control_theta(images, generator)
        if self.num_frozen:
            identity = theta_heads.new_tensor([1.0, 0.0, 0.0]).expand(batch, parents, self.num_frozen, 3)
            theta = torch.cat([identity, theta_heads], dim=2)
        else:
            theta = theta_heads
        theta = theta.reshape(batch, parents * self.num_children, 3)

        size = self.out_size
        affine = theta_matrix(theta.reshape(-1, 3))[:, :2, :]  # (B * N_p * K, 2, 3), eq. 4
        grid = F.affine_grid(affine, [affine.shape[0], 3, size, size], align_corners=False)
        # Every child samples its own parent's I' (child n * K + k <- parent n).
        patches = self._sample(reads.detach(), grid, generator)
        patches = patches.view(batch, parents * self.num_children, 3, size, size)
        support = (prob > 0).flatten(-2).sum(-1)
        return MagnifyingOutput(
            theta=theta, patches=patches, prob=prob, support=support, head_logits=mil_logit
        )

    def _sample(self, reads: Tensor, grid: Tensor, generator: torch.Generator | None) -> Tensor:
        """Child n * K + k samples its parent n's I'; with ``theta_grad_blur``, the low-pass gradient."""

        def per_child(images: Tensor) -> Tensor:
            return images.unsqueeze(2).expand(-1, -1, self.num_children, -1, -1, -1).flatten(0, 2)

        if self.theta_grad_blur <= 0 or not (torch.is_grad_enabled() and grid.requires_grad):
            return self.sampler(per_child(reads), grid, generator=generator)
        with torch.no_grad():
            sharp = self.sampler(per_child(reads), grid, generator=generator)
            blurred = gaussian_blur(reads.flatten(0, 1), self.theta_grad_blur).view_as(reads)
        smooth = self.sampler(per_child(blurred), grid, generator=generator)
        return low_pass_gradient(sharp, smooth)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer_index}, parents={self.num_parents}, children={self.num_children}, "
            f"frozen={self.num_frozen}, heads={self.num_heads}, out_size={self.out_size}"
        )
