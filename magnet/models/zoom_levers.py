"""The zoom levers that are ours, small parts around the heads and the sampler [choice, docs/method.md §9].

Each lever is a config key, off by default (then the layer is the paper's, §3.1). A magnifying layer holds
one of each part and never tests the key itself:

- head input (``head_highpass``): what the heads see of a parent, its view I or I's local contrast;
- sibling layout (``sibling_layout``): how the headed children of a parent start apart, by initial offsets
  in theta (docs/method.md §2.4), by an equal strip of the parent's map per head, or by a strip per head
  holding an equal share of the parent view's tissue (``magnet.layers.tissue``);
- theta gradient (``theta_grad``, ``theta_grad_blur``): how the losses reach theta through the sampler, in
  full (the paper), not at all, or from a blurred I';
- head-MIL pool (``head_mil``, ``head_mil_sharpness``): a slide logit from the heads' score maps;
- head weights (``shared_heads``): one network per head (the paper) or one per layer
  (``magnet.layers.heads.SharedLocalisationHeads``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from magnet.layers.blur import gaussian_blur, low_pass_gradient
from magnet.layers.heads import LocalisationHeads, SharedLocalisationHeads
from magnet.layers.tissue import tissue_pixels, tissue_strip_masks
from magnet.models.model_config import MagNetConfig, SiblingLayoutName

__all__ = [
    "SIBLING_LAYOUT_BUILDERS",
    "DetachedTheta",
    "HeadInput",
    "HeadMilPool",
    "LocalContrast",
    "LowPassThetaGradient",
    "SiblingLayout",
    "TissueStripLayout",
    "ThetaGradient",
    "build_sibling_layout",
    "head_input",
    "localisation_heads",
    "sibling_offsets",
    "strip_masks",
    "theta_gradient",
]

# Logit given to pixels outside a head's strip: far below any trained logit, so sparsemax gives them 0, yet
# finite, so the sparsemax sort and its cumulative sums stay free of inf - inf.
_OUTSIDE_STRIP = -1e4


# --- head input --------------------------------------------------------------------------------------------
class HeadInput:
    """The heads see the parent's view I itself (the paper, §3.1). Images ``(B, N_p, C, H, W)``."""

    def __call__(self, images: Tensor) -> Tensor:
        return images


class LocalContrast(HeadInput):
    """The heads see I - blur(I) + 0.5 [choice, config ``head_highpass`` = the blur's sigma in I pixels].

    A lesion differs from the tissue around it, while whole slides differ in stain, which the absolute colour
    mixes in; local contrast keeps the first and drops the second (docs/BENCHMARKS.md, head MIL on root
    views).
    """

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def __call__(self, images: Tensor) -> Tensor:
        flat = images.flatten(0, 1)
        return (0.5 + flat - gaussian_blur(flat, self.sigma)).view_as(images)


def head_input(highpass_sigma: float) -> HeadInput:
    """Local contrast for ``highpass_sigma > 0``, else the view itself."""
    return LocalContrast(highpass_sigma) if highpass_sigma > 0 else HeadInput()


# --- sibling layout ----------------------------------------------------------------------------------------
def sibling_offsets(num_heads: int, offset: float, layer_index: int, has_frozen: bool) -> Tensor:
    """Initial offsets o_k ``(num_heads, 2)`` of one parent's headed children [choice, docs/method.md §2.4].

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


def strip_masks(num_heads: int, layer_index: int, size: int) -> Tensor:
    """Each headed child's strip of its parent's map: ``(num_heads, size, size)`` booleans [choice].

    The map is cut into ``num_heads`` strips of (nearly) equal width, side by side along x at odd layers and
    along y at even ones (so a tree of layers alternates the cut); head k gets strip k. One head gets it all.
    """
    mask = torch.ones(num_heads, size, size, dtype=torch.bool)
    if num_heads <= 1:
        return mask
    mask.zero_()
    edges = [round(k * size / num_heads) for k in range(num_heads + 1)]
    for k in range(num_heads):
        if layer_index % 2 == 1:
            mask[k, :, edges[k] : edges[k + 1]] = True
        else:
            mask[k, edges[k] : edges[k + 1], :] = True
    return mask


class SiblingLayout(nn.Module):
    """How the headed children of one parent start apart (docs/method.md §2.4; strips: §9).

    ``offsets`` ``(K_heads, 2)``: each child's initial offset o_k, t = tanh(mu + atanh(o_k)).
    ``masks`` ``(K_heads, V, V)``: the pixels of the parent's map that each head may put probability on, the
    same for every view. Both are non-persistent buffers: they follow the module's device and stay out of
    checkpoints. ``view_masks`` gives the masks of given parent views ``(B, N_p * K_heads, V, V)``; a layout
    whose masks depend on the view (``TissueStripLayout``) needs them passed to ``confine``/``flat_maps``.
    """

    offsets: Tensor
    masks: Tensor

    def __init__(self, offsets: Tensor, masks: Tensor) -> None:
        super().__init__()
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("masks", masks, persistent=False)
        # All True (no strips): confining is a no-op, skipped (it would copy every map at each forward).
        self.confined = not bool(masks.all())

    @property
    def heads_per_parent(self) -> int:
        return int(self.masks.shape[0])

    def view_masks(self, images: Tensor) -> Tensor:
        """``(B, N_p * K_heads, V, V)`` booleans for parent views ``(B, N_p, 3, V, V)``: here the fixed masks
        for every slide and parent (an expanded view, no copy)."""
        batch, parents = images.shape[:2]
        per_slide = self.masks.to(images.device).repeat(parents, 1, 1)
        return per_slide.unsqueeze(0).expand(batch, -1, -1, -1)

    def confine(self, maps: Tensor, fill: float = _OUTSIDE_STRIP, masks: Tensor | None = None) -> Tensor:
        """Maps ``(B, N_p * K_heads, V, V)`` with ``fill`` outside each head's strip (head n*K_heads + k
        has strip k), the strips of ``masks`` (``view_masks``) where given."""
        if not self.confined:
            return maps
        if masks is None:
            parents = maps.shape[1] // max(self.heads_per_parent, 1)
            masks = self.masks.repeat(parents, 1, 1)
        return maps.masked_fill(~masks, fill)

    def flat_maps(self, masks: Tensor | None = None) -> Tensor:
        """Each headed child's flat map, uniform on its strip: ``(K_heads, V, V)``, or the shape of ``masks``
        (``view_masks``) where given."""
        mask = (self.masks if masks is None else masks).float()
        return mask / mask.sum(dim=(-2, -1), keepdim=True)

    def extra_repr(self) -> str:
        return f"heads_per_parent={self.heads_per_parent}, strips={self.confined}"


class TissueStripLayout(SiblingLayout):
    """Strips that share the tissue of each parent view [choice, config ``sibling_layout=tissue_strips``,
    docs/method.md §9]: like equal strips (no offsets, cut along x at odd layers and y at even ones), but the
    edges sit at the quantiles of the view's tissue mass along the cut, so each head's strip holds about
    1/K_heads of the tissue and none is all glass (``magnet.layers.tissue``). Tissue is read off the view I
    the heads' input is made from (before any local contrast), pixels whose spread max(RGB) - min(RGB)
    reaches ``threshold`` of 255. ``masks`` holds the equal strips, what a view without tissue gets.
    """

    def __init__(self, num_heads: int, layer_index: int, size: int, threshold: float) -> None:
        super().__init__(torch.zeros(num_heads, 2), strip_masks(num_heads, layer_index, size))
        self.along_x = layer_index % 2 == 1
        self.threshold = threshold

    def view_masks(self, images: Tensor) -> Tensor:
        if not self.confined:  # one head: it has the whole view
            return super().view_masks(images)
        tissue = tissue_pixels(images, self.threshold)  # (B, N_p, V, V)
        masks = tissue_strip_masks(tissue, self.heads_per_parent, self.along_x)  # (B, N_p, K, V, V)
        return masks.flatten(1, 2)

    def confine(self, maps: Tensor, fill: float = _OUTSIDE_STRIP, masks: Tensor | None = None) -> Tensor:
        if masks is None and self.confined:
            raise ValueError("tissue strips depend on the view: pass masks=layout.view_masks(images)")
        return super().confine(maps, fill, masks)

    def flat_maps(self, masks: Tensor | None = None) -> Tensor:
        if masks is None and self.confined:
            raise ValueError("tissue strips depend on the view: pass masks=layout.view_masks(images)")
        return super().flat_maps(masks)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tissue_threshold={self.threshold:g}"


def _offset_layout(config: MagNetConfig, num_heads: int, layer_index: int, has_frozen: bool) -> SiblingLayout:
    """Siblings start on offset boxes and every head sees the whole map (docs/method.md §2.4)."""
    offsets = sibling_offsets(num_heads, config.sibling_offset, layer_index, has_frozen)
    return SiblingLayout(offsets, torch.ones(num_heads, config.view_size, config.view_size, dtype=torch.bool))


def _strip_layout(config: MagNetConfig, num_heads: int, layer_index: int, has_frozen: bool) -> SiblingLayout:
    """Each head has its strip; no offsets, so a box goes exactly where its head's map points (head MIL
    needs that: the score map must steer the zoom)."""
    return SiblingLayout(torch.zeros(num_heads, 2), strip_masks(num_heads, layer_index, config.view_size))


def _tissue_strip_layout(
    config: MagNetConfig, num_heads: int, layer_index: int, has_frozen: bool
) -> SiblingLayout:
    """Strips with an equal share of each view's tissue (``TissueStripLayout``)."""
    return TissueStripLayout(num_heads, layer_index, config.view_size, config.tissue_strip_threshold)


LayoutBuilder = Callable[[MagNetConfig, int, int, bool], SiblingLayout]  # (config, K_heads, layer, frozen)
SIBLING_LAYOUT_BUILDERS: Mapping[SiblingLayoutName, LayoutBuilder] = {
    "offset": _offset_layout,
    "strips": _strip_layout,
    "tissue_strips": _tissue_strip_layout,
}


def build_sibling_layout(
    config: MagNetConfig, layer_index: int, num_heads: int, has_frozen: bool
) -> SiblingLayout:
    """The layout named by ``config.sibling_layout`` for ``num_heads`` headed children per parent."""
    return SIBLING_LAYOUT_BUILDERS[config.sibling_layout](config, num_heads, layer_index, has_frozen)


def localisation_heads(config: MagNetConfig, num_heads: int) -> LocalisationHeads:
    """The layer's ``num_heads`` heads: independent (the paper, §3.1) or one shared network
    (``config.shared_heads``)."""
    kind = SharedLocalisationHeads if config.shared_heads else LocalisationHeads
    return kind(num_heads, in_channels=3, branch_channels=config.head_branch_channels,
                num_blocks=config.head_blocks, init_std=config.head_init_std,
                learn_temperature=config.learn_temperature)


# --- theta gradient ----------------------------------------------------------------------------------------
class ThetaGradient:
    """The paper's path: the losses reach theta, and through it the heads, by the sampler's gradient."""

    def admit(self, theta: Tensor) -> Tensor:
        """Theta as the sampler gets it."""
        return theta

    def sample(self, sample: Callable[[Tensor], Tensor], reads: Tensor, grid: Tensor) -> Tensor:
        """``sample(images)`` samples the children's grid from per-parent ``images`` like ``reads``."""
        return sample(reads)


class DetachedTheta(ThetaGradient):
    """Theta carries no gradient [choice, config ``theta_grad=false``]: the heads learn from head MIL alone,
    free of the sampler's texture-scale gradient (docs/method.md §9)."""

    def admit(self, theta: Tensor) -> Tensor:
        return theta.detach()


class LowPassThetaGradient(ThetaGradient):
    """Theta's gradient from I' blurred with ``sigma`` I' pixels, the value from the sharp I' [choice, config
    ``theta_grad_blur``]: the sampler's gradient then follows lesion-scale signal, not cell-scale texture
    (``magnet.layers.blur``, docs/method.md §9)."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def sample(self, sample: Callable[[Tensor], Tensor], reads: Tensor, grid: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and grid.requires_grad):  # nothing to steer: one plain sample
            return sample(reads)
        with torch.no_grad():
            sharp = sample(reads)
            blurred = gaussian_blur(reads.flatten(0, 1), self.sigma).view_as(reads)
        return low_pass_gradient(sharp, sample(blurred))


def theta_gradient(enabled: bool, blur_sigma: float) -> ThetaGradient:
    """The policy of config ``theta_grad`` / ``theta_grad_blur`` (a detached theta needs no blur)."""
    if not enabled:
        return DetachedTheta()
    return LowPassThetaGradient(blur_sigma) if blur_sigma > 0 else ThetaGradient()


# --- head MIL ----------------------------------------------------------------------------------------------
class HeadMilPool:
    """Head MIL slide logit ``(B,)`` [choice, config ``head_mil``, docs/method.md §9]: the pool
    (1/r) log mean exp(r z) over the raw score maps z of all of a layer's heads, each on its own strip's
    pixels, plus a bias.

    The log-sum-exp pool (Pinheiro & Collobert, "From image-level to pixel-level labeling with convolutional
    networks", CVPR 2015) sits between max and mean; r = ``head_mil_sharpness``. The temperature stays out:
    it sharpens the sparsemax map, not the score.
    """

    def __init__(self, sharpness: float) -> None:
        self.sharpness = sharpness

    def __call__(
        self, scores: Tensor, layout: SiblingLayout, bias: Tensor, masks: Tensor | None = None
    ) -> Tensor:
        """``masks``: the layout's ``view_masks`` of the views the scores are of (needed where they depend
        on the view)."""
        r = self.sharpness
        inside = layout.confine(scores.float() * r, fill=float("-inf"), masks=masks).flatten(1)
        if masks is None:
            count = float(layout.masks.sum()) * (scores.shape[1] // layout.heads_per_parent)
            return (torch.logsumexp(inside, dim=1) - math.log(count)) / r + bias
        log_count = masks.flatten(1).sum(dim=1).to(inside.dtype).log()  # pixels inside, per slide
        return (torch.logsumexp(inside, dim=1) - log_count) / r + bias
