"""The Magnifying Network: L magnifying layers, a classification layer, auxiliary classifiers (paper §3).

Data flow for a batch of B slides (docs/method.md §2.5-§2.6, §4):

- Root: the ROI A0 (identity, or a dihedral map: augmentation is folded in here,
  docs/method.md §1);
  I0 = read(A0, view_size) and I'0 = read(A0, read_size), both under ``no_grad``.
- Layer l takes N_{l-1} parents per slide and makes N_l = N_{l-1} * P_l children. The child's ROI is
  A_child = A_parent @ T(theta) (``canvas.compose``). Its I is its sampled patch itself (this keeps the
  path differentiable: the losses reach every earlier theta through the heads of later layers); its I' is
  a fresh, detached read of the slide at its ROI: new detail its parent's I' did not hold (the
  "magnifying" step). The last layer samples final_size patches from I' read at final_read_size.
- The N_L final patches, in depth-first order, go to the classifier (CNN -> GRU -> FC), and the patches of
  each auxiliary layer to its auxiliary classifier.

The model never opens files: pixels come from ``RegionSource`` objects (one per slide), read once per slide
per layer with all of that slide's ROIs in one call.

The zoom mode (``magnet.models.zoom``, docs/method.md §8) is one strategy shared by the layers (but the
fixed layout's at a layer that ``model.learned_layers`` leaves out, docs/method.md §9). Under the oracle
control the final ROIs are given (``final_rois``) and the final patches are direct reads there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from magnet.geometry import RegionSource, compose, read_views, roi_to_level0_box
from magnet.models.classifier import AuxiliaryClassifier, Classifier
from magnet.models.magnifying import MagnifyingLayer
from magnet.models.model_config import MagNetConfig
from magnet.models.recentre import FinalStep, keep_final, read_final_directly, recentre_final
from magnet.models.zoom import ZoomStrategy, zoom_strategy

__all__ = ["MagNet", "MagNetOutput", "read_views"]


@dataclass
class MagNetOutput:
    """Everything a MagNet computes for a batch of B slides; lists are per layer 1..L."""

    logit: Tensor  # (B,) slide logit (the GRU's last step)
    running_logits: Tensor  # (B, N_L) logit after each final patch, depth-first order (paper Figure 5)
    aux_logits: dict[int, Tensor] = field(default_factory=dict)  # layer -> (B,) auxiliary logit
    thetas: list[Tensor] = field(default_factory=list)  # (B, N_l, 3) (s, tx, ty), with gradient
    rois: list[Tensor] = field(default_factory=list)  # (B, N_l, 3, 3) canvas ROIs, float64, detached
    boxes_level0: list[Tensor] = field(default_factory=list)  # (B, N_l, 4) level-0 (x0, y0, x1, y1)
    patches: list[Tensor] = field(default_factory=list)  # (B, N_l, 3, S, S), S = view or final size
    support: list[Tensor] = field(default_factory=list)  # (B, N_{l-1} * K_heads) sparsemax support sizes
    # layer -> (B,) head-MIL slide logit of that layer's heads ([choice] model.head_mil, docs/method.md §9;
    # see magnet.models.zoom_levers.HeadMilPool); only layers whose heads are in use
    head_logits: dict[int, Tensor] = field(default_factory=dict)
    # layer -> (B, N_{l-1} * K_heads, V, V) the heads' raw score maps (learned zoom only)
    scores: dict[int, Tensor] = field(default_factory=dict)
    # (B, N_L) each final patch's own logit (readout max / lse / attention; None for the GRU)
    patch_logits: Tensor | None = None
    # (B, N_L, D) the classifier CNN's features of each final patch, detached (None before the classifier)
    patch_features: Tensor | None = None
    # (B, 3, 3) the root ROIs (float64, detached): the parents of layer 1
    root_rois: Tensor | None = None
    # (B, N_L, h, w) the readout's logit for each cell of each final patch's CNN map, no gradient (forward's
    # cell_logits=True; Classifier.cell_logits): where in each patch the readout sees tumour
    patch_cell_logits: Tensor | None = None


class MagNet(nn.Module):
    """MagNet of ``config``: ``forward(sources, root_rois=None, generator=None, final_rois=None)``.

    ``load_weights=False`` builds a ``pretrained`` model without reading its ImageNet weights: for a model
    whose every weight then comes from a checkpoint (``magnet.training.checkpoints``), which must load
    offline.
    """

    def __init__(self, config: MagNetConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        # One strategy for every layer, but the fixed layout's at a layer model.learned_layers leaves out.
        # Under the oracle control the last layer's module is built as in every mode, unused, so that
        # checkpoints of all modes have the same keys.
        self.zoom: ZoomStrategy = zoom_strategy(config)
        self.layers = nn.ModuleList(
            MagnifyingLayer(
                children, config, index,
                zoom=self.zoom if config.zoom_at(index) == config.zoom else zoom_strategy(config, index),
            )
            for index, children in enumerate(config.patches_per_layer, start=1)
        )
        self.classifier = Classifier(
            config.backbone,
            config.gru_hidden,
            config.classifier_size,
            pretrained=config.pretrained,
            readout=config.readout,
            load_weights=load_weights,
            frozen=config.freeze_backbone,
            instances=config.readout_instances,
            weights=config.backbone_weights,
        )
        # What the readout reads: the last layer's patches as sampled (the paper), read again at their
        # boxes (model.final_read=direct), or re-centred on what the classifier sees in them and read again
        # (model.recentre); the oracle keeps the boxes it was given, read directly already.
        self.final_step: FinalStep = keep_final
        if not self.zoom.needs_final_rois:
            if config.recentre:
                self.final_step = recentre_final
            elif config.final_read == "direct":
                self.final_step = read_final_directly
        self.aux_classifiers = nn.ModuleDict(
            {
                f"layer{layer}": AuxiliaryClassifier(
                    config.aux_backbone, config.aux_uses_pretrained, load_weights
                )
                for layer in config.aux_layers
            }
        )

    @property
    def num_heads(self) -> list[int]:
        """Localisation heads per layer."""
        return [layer.num_heads for layer in self.layers]  # type: ignore[misc]

    @property
    def uses_heads(self) -> bool:
        """Whether the zoom mode evaluates (and so trains) the localisation heads of some layer: learned
        zoom only."""
        return any(layer.zoom.uses_heads for layer in self.layers)  # type: ignore[union-attr]

    @property
    def needs_final_rois(self) -> bool:
        """Whether ``forward`` needs ``final_rois`` (the oracle control)."""
        return self.zoom.needs_final_rois

    @property
    def draws_at_random(self) -> bool:
        """Whether a forward in evaluation mode draws from its generator (the random-zoom control)."""
        return self.zoom.draws_at_random

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The localisation heads' parameters, every layer (not the head-MIL biases): e.g. for ``head_lr``."""
        for layer in self.layers:
            assert isinstance(layer, MagnifyingLayer)
            yield from layer.head_parameters()

    def root_view_sizes(self) -> tuple[int, int]:
        """The sizes at which ``forward`` reads each slide's root ROI (I0 and I'0), its first reads: a caller
        may read them in advance (``magnet.inference.prefetch``)."""
        return self.config.view_size, self._read_size(1)

    def _read_size(self, layer_index: int) -> int:
        """Size of the I' read by the parents of layer ``layer_index`` (1-based)."""
        last = layer_index == self.config.num_layers
        return self.config.final_read_size if last else self.config.read_size

    def _parent_reads(
        self, sources: Sequence[RegionSource], rois: Tensor, layer_index: int, images: Tensor
    ) -> Tensor:
        """I' of the parents of layer ``layer_index`` (1-based), whose I are ``images``: read from the slide,
        except where the final step reads every final box from the slide itself (``model.final_read=direct``):
        the last layer's samples are then thrown away, so they are drawn from the parents' I, read already,
        and the parents' ``final_read_size`` reads (for ``magnet3``, 1.2 Mpx per slide) are never made."""
        if layer_index == self.config.num_layers and self.final_step is read_final_directly:
            return images
        return read_views(sources, rois, self._read_size(layer_index), images.device)

    def forward(
        self,
        sources: Sequence[RegionSource],
        root_rois: Tensor | None = None,
        generator: torch.Generator | None = None,
        final_rois: Tensor | None = None,
        auxiliary: bool = True,
        cell_logits: bool = False,
    ) -> MagNetOutput:
        """Classify the slides ``sources`` (B of them); ``root_rois`` ``(B, 3, 3)`` defaults to identity.

        ``auxiliary=False`` leaves the auxiliary classifiers out (``aux_logits`` stays empty): only the
        training losses use them (paper §3.3), and for ``magnet3`` they are about a third of a forward pass.
        ``cell_logits=True`` also fills ``patch_cell_logits`` (no gradient; from the same pass of the
        classifier's CNN where it is frozen, one more pass otherwise): for the heads' value target ``cells``
        (``magnet.models.head_value``).

        ``final_rois`` ``(B, N_L, 3, 3)``: the last layer's canvas ROIs when the zoom mode needs them
        (``needs_final_rois``: zoom="oracle"; refused otherwise; ``magnet.inference.oracle.OracleZoom`` builds
        them, with the root's dihedral map).
        """
        output = self.final_patches(sources, root_rois, generator, final_rois)
        if cell_logits:
            features, output.patch_cell_logits = self.classifier.features_and_cell_logits(output.patches[-1])
        else:
            features = self.classifier.features(output.patches[-1])
        final = self.classifier.read_out(features)
        output.patch_features = self.classifier.pooled(features).detach()
        output.logit = final.logit
        output.running_logits = final.running_logits
        output.patch_logits = final.patch_logits
        for layer_index in self.config.aux_layers if auxiliary else ():
            aux = self.aux_classifiers[f"layer{layer_index}"]
            output.aux_logits[layer_index] = aux(output.patches[layer_index - 1])
        return output

    def final_patches(
        self,
        sources: Sequence[RegionSource],
        root_rois: Tensor | None = None,
        generator: torch.Generator | None = None,
        final_rois: Tensor | None = None,
    ) -> MagNetOutput:
        """``forward`` up to the patches the readout reads: ``zoom_in``, then the final step (the patches as
        sampled, read again at their boxes with ``model.final_read=direct``, or re-centred with
        ``model.recentre``, ``magnet.models.recentre``); no logits yet."""
        output = self.zoom_in(sources, root_rois, generator, final_rois)
        self.final_step(output, sources, self.classifier, self.config.final_size)
        return output

    def zoom_in(
        self,
        sources: Sequence[RegionSource],
        root_rois: Tensor | None = None,
        generator: torch.Generator | None = None,
        final_rois: Tensor | None = None,
    ) -> MagNetOutput:
        """``forward`` up to the last layer's patches as sampled: every layer's ROIs, boxes and patches."""
        batch = len(sources)
        if batch == 0:
            raise ValueError("MagNet.forward needs at least one slide")
        device = next(self.parameters()).device
        if root_rois is None:
            root_rois = torch.eye(3, dtype=torch.float64).expand(batch, 3, 3)
        if root_rois.shape != (batch, 3, 3):
            raise ValueError(f"root_rois must have shape ({batch}, 3, 3), got {tuple(root_rois.shape)}")
        final_shape = (batch, self.config.patches_at(self.config.num_layers), 3, 3)
        given = self.zoom.given_final_rois(final_rois, final_shape, device)
        parent_rois = root_rois.detach().to(device=device, dtype=torch.float64).unsqueeze(1)  # (B, 1, 3, 3)
        images = read_views(sources, parent_rois, self.config.view_size, device)
        reads = self._parent_reads(sources, parent_rois, 1, images)

        output = MagNetOutput(
            logit=torch.empty(0), running_logits=torch.empty(0), root_rois=parent_rois[:, 0]
        )
        for layer in self.layers:
            assert isinstance(layer, MagnifyingLayer)
            if given is not None and layer.layer_index == self.config.num_layers:
                self._read_given_layer(output, sources, parent_rois, given)
                break
            result = layer(images, reads, generator=generator)
            theta = (
                result.theta.detach().to(torch.float64).view(batch, layer.num_parents, layer.num_children, 3)
            )
            rois = compose(parent_rois.unsqueeze(2), theta).flatten(1, 2)  # (B, N_l, 3, 3), depth-first
            output.thetas.append(result.theta)
            output.rois.append(rois)
            output.boxes_level0.append(
                torch.stack([roi_to_level0_box(r, s.slide_size) for r, s in zip(rois, sources, strict=True)])
            )
            output.patches.append(result.patches)
            output.support.append(result.support)
            if result.head_logits is not None:
                output.head_logits[layer.layer_index] = result.head_logits
            if result.scores is not None:
                output.scores[layer.layer_index] = result.scores
            if layer.layer_index < self.config.num_layers:
                images = result.patches  # the child's I: its own sampled patch (differentiable path)
                if given is None or layer.layer_index + 1 < self.config.num_layers:  # given: reads its own
                    reads = self._parent_reads(sources, rois, layer.layer_index + 1, images)
                parent_rois = rois
        return output

    def _read_given_layer(
        self, output: MagNetOutput, sources: Sequence[RegionSource], parent_rois: Tensor, rois: Tensor
    ) -> None:
        """The last layer with given final ROIs (the oracle control, docs/method.md §8): its patches are
        reads of the slides at ``rois``.

        Pixel budget: the classifier (and an auxiliary classifier of layer L) gets the same N_L patches of
        final_size x final_size as in every other mode, and layers 1..L-1 read what "fixed" reads. Only the
        last layer's read differs: instead of each parent's I' at final_read_size (N_{L-1} reads) that the
        children are sampled from, each final patch is one direct read at final_size (N_L reads, antialiased
        by the reader); for magnet3 that is 18 x 224^2 pixels instead of 6 x 448^2 = 24 x 224^2, so the oracle
        never sees more pixels than learned zoom as long as P_L <= (final_read_size / final_size)^2.

        The reported theta is each ROI relative to its nominal parent (child n * P_L + k of parent n, the
        depth-first order), so ``compose(parent, theta)`` gives the ROI as in every other layer; t may lie
        beyond +-1 (the oracle ignores the parents) and carries no gradient. No maps: an empty support.
        """
        batch, count = rois.shape[:2]
        device = rois.device
        parents = parent_rois.repeat_interleave(count // parent_rois.shape[1], dim=1)  # (B, N_L, 3, 3)
        relative = torch.linalg.solve(parents, rois)  # A_parent^-1 A_roi = T(theta) (same dihedral map)
        scale = relative[..., :2, :2].abs().sum(-1)[..., 0]
        theta = torch.stack([scale, relative[..., 0, 2], relative[..., 1, 2]], dim=-1).float()
        output.thetas.append(theta)
        output.rois.append(rois)
        output.boxes_level0.append(
            torch.stack([roi_to_level0_box(r, s.slide_size) for r, s in zip(rois, sources, strict=True)])
        )
        output.patches.append(read_views(sources, rois, self.config.final_size, device))
        output.support.append(torch.zeros(batch, 0, dtype=torch.long, device=device))
