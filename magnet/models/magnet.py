"""The Magnifying Network: L magnifying layers, a classification layer, auxiliary classifiers (paper §3).

Data flow for a batch of B slides (METHOD.md §2.5-§2.6, §4):

- Root: the ROI A0 (identity, or a dihedral map: augmentation is folded in here, METHOD.md §1);
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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from magnet.geometry import RegionSource, compose, roi_to_level0_box
from magnet.models.classifier import AuxiliaryClassifier, Classifier
from magnet.models.magnifying import MagnifyingLayer
from magnet.models.model_config import MagNetConfig

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
    # layer -> (B,) head-MIL slide logit of that layer's heads (issue 6 lever, model.head_mil; see
    # MagnifyingLayer); only layers whose heads are in use
    head_logits: dict[int, Tensor] = field(default_factory=dict)


def read_views(sources: Sequence[RegionSource], rois: Tensor, size: int, device: torch.device) -> Tensor:
    """Read ROIs ``(B, N, 3, 3)`` (row b from ``sources[b]``) as ``(B, N, 3, size, size)``, detached.

    One ``read`` call per slide, with all of its ROIs.
    """
    with torch.no_grad():
        views = [source.read(slide_rois, size) for source, slide_rois in zip(sources, rois, strict=True)]
        return torch.stack(views).to(device=device, dtype=torch.float32)


class MagNet(nn.Module):
    """MagNet of ``config``: ``forward(sources, root_rois=None, generator=None, final_rois=None)``."""

    def __init__(self, config: MagNetConfig) -> None:
        super().__init__()
        self.config = config
        # zoom="oracle" (issue 6 control): layers 1..L-1 are the "fixed" control; the last layer's patches
        # come from the given final_rois (``_oracle_layer``), its module is kept so checkpoints match.
        layer_config = replace(config, zoom="fixed") if config.zoom == "oracle" else config
        self.layers = nn.ModuleList(
            MagnifyingLayer(children, layer_config, index)
            for index, children in enumerate(config.patches_per_layer, start=1)
        )
        self.classifier = Classifier(
            config.backbone,
            config.gru_hidden,
            config.classifier_size,
            pretrained=config.pretrained,
            readout=config.readout,
        )
        self.aux_classifiers = nn.ModuleDict(
            {
                f"layer{layer}": AuxiliaryClassifier(config.aux_backbone, pretrained=config.pretrained)
                for layer in config.aux_layers
            }
        )

    @property
    def num_heads(self) -> list[int]:
        """Localisation heads per layer."""
        return [layer.num_heads for layer in self.layers]  # type: ignore[misc]

    def _read_size(self, layer_index: int) -> int:
        """Size of the I' read by the parents of layer ``layer_index`` (1-based)."""
        last = layer_index == self.config.num_layers
        return self.config.final_read_size if last else self.config.read_size

    def forward(
        self,
        sources: Sequence[RegionSource],
        root_rois: Tensor | None = None,
        generator: torch.Generator | None = None,
        final_rois: Tensor | None = None,
    ) -> MagNetOutput:
        """Classify the slides ``sources`` (B of them); ``root_rois`` ``(B, 3, 3)`` defaults to identity.

        ``final_rois`` ``(B, N_L, 3, 3)``: the last layer's canvas ROIs under zoom="oracle" (required there,
        refused otherwise; ``magnet.inference.oracle.OracleZoom`` builds them, with the root's dihedral map).
        """
        batch = len(sources)
        if batch == 0:
            raise ValueError("MagNet.forward needs at least one slide")
        device = next(self.parameters()).device
        if root_rois is None:
            root_rois = torch.eye(3, dtype=torch.float64).expand(batch, 3, 3)
        if root_rois.shape != (batch, 3, 3):
            raise ValueError(f"root_rois must have shape ({batch}, 3, 3), got {tuple(root_rois.shape)}")
        oracle = self._oracle_rois(final_rois, batch, device)
        parent_rois = root_rois.detach().to(device=device, dtype=torch.float64).unsqueeze(1)  # (B, 1, 3, 3)
        images = read_views(sources, parent_rois, self.config.view_size, device)
        reads = read_views(sources, parent_rois, self._read_size(1), device)

        output = MagNetOutput(logit=torch.empty(0), running_logits=torch.empty(0))
        for layer in self.layers:
            assert isinstance(layer, MagnifyingLayer)
            if oracle is not None and layer.layer_index == self.config.num_layers:
                self._oracle_layer(output, sources, parent_rois, oracle)
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
            if layer.layer_index < self.config.num_layers:
                images = result.patches  # the child's I: its own sampled patch (differentiable path)
                if oracle is None or layer.layer_index + 1 < self.config.num_layers:  # oracle: reads its own
                    reads = read_views(sources, rois, self._read_size(layer.layer_index + 1), device)
                parent_rois = rois

        final = self.classifier(output.patches[-1])
        output.logit = final.logit
        output.running_logits = final.running_logits
        for layer_index in self.config.aux_layers:
            aux = self.aux_classifiers[f"layer{layer_index}"]
            output.aux_logits[layer_index] = aux(output.patches[layer_index - 1])
        return output

    def _oracle_rois(self, final_rois: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """``final_rois`` checked against zoom="oracle" and shape, float64 on ``device``; None otherwise."""
        oracle = self.config.zoom == "oracle"
        if oracle and final_rois is None:
            raise ValueError(
                "model.zoom='oracle' places the final patches by ground truth: pass final_rois "
                "(B, N_L, 3, 3) canvas ROIs (magnet.inference.oracle.OracleZoom.rois builds them)"
            )
        if final_rois is None:
            return None
        if not oracle:
            raise ValueError(f"final_rois is only for model.zoom='oracle', not zoom={self.config.zoom!r}")
        shape = (batch, self.config.patches_at(self.config.num_layers), 3, 3)
        if tuple(final_rois.shape) != shape:
            raise ValueError(f"final_rois must have shape {shape}, got {tuple(final_rois.shape)}")
        return final_rois.detach().to(device=device, dtype=torch.float64)

    def _oracle_layer(
        self, output: MagNetOutput, sources: Sequence[RegionSource], parent_rois: Tensor, rois: Tensor
    ) -> None:
        """The last layer under zoom="oracle": its patches are reads of the slides at ``rois`` (issue 6).

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
