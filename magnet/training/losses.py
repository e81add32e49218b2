"""MagNet's training loss (paper §4.3 "Loss Functions"; docs/method.md §4).

total = w_final * CE(final logit) + w_aux * sum_l CE(aux logit of layer l) + w_par * L_par
        + w_head_mil * mean_l CE(head-MIL logit of layer l) + w_head_value * L_value

- The task is binary with one logit per output, so cross-entropy is BCE-with-logits, averaged over slides.
- Paradoxical loss (Maksoud et al., "SOS: Selective Objective Switch for Rapid Immunofluorescence Whole
  Slide Image Classification", CVPR 2020) [choice: its exact formula could not be retrieved; docs/method.md §4
  fixes this hinge]: the deeper auxiliary classifier should do at least as well as the shallower one,
  L_par = mean over slides of max(0, l_last - sg(l_first)), with l the per-slide cross-entropies of the
  first and last auxiliary layers (paper: layers 1 and 3). l_first is detached, or the loss would reward
  making the shallow classifier worse. With fewer than two auxiliary layers it is 0.
- Head MIL [choice, not the paper, docs/method.md §9]: when the model has ``head_mil`` on, each layer's heads
  give a slide logit (``MagNetOutput.head_logits``); their CE, averaged over layers, teaches the heads
  what to look at straight from the slide label. Absent when the model has it off.
- Head value [choice, not the paper, docs/method.md §9, off by default]: L_value = mean over slides, final
  patches and the layers with heads of CE(the ancestor head's score at the patch's centre, sg(the
  classifier's probability for the patch)) (``magnet.models.head_value``): the heads learn where the
  classifier finds tumour. Needs per-patch logits (``model.readout`` max, lse or attention) and learned zoom.
  ``head_value_target`` = ``novelty`` trains the same scores towards how unusual each patch's features are
  instead (``magnet.models.head_value.feature_novelty``); it needs no per-patch logit. ``cells`` reads each
  ancestor's score at the centre of every cell of the patch's CNN map, against the classifier's probability
  for that cell (``magnet.models.head_value.cell_probability``): a map of targets per patch, not one number.
  ``head_value_negatives`` = ``zero`` [choice, off by default] sets every target of a negative slide to 0:
  the look-alikes a negative slide's patches visit become the heads' hard negatives, whatever the
  classifier says of them (``magnet.models.head_value.gate_by_label``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from magnet.domains import NON_NEGATIVE, check_choices, check_domains
from magnet.geometry import cell_centres
from magnet.models.head_value import (
    HEAD_VALUE_TARGETS,
    HeadValueNegatives,
    HeadValueTarget,
    ancestor_scores,
    gate_by_label,
)
from magnet.models.magnet import MagNetOutput

__all__ = ["LossWeights", "LossBreakdown", "magnet_loss", "paradoxical_loss"]


@dataclass
class LossWeights:
    """Weights of the loss terms; all 1 as in docs/method.md §4 (the paper gives none)."""

    final: Annotated[float, NON_NEGATIVE] = 1.0  # CE on the GRU's last step (paper §4.3)
    aux: Annotated[float, NON_NEGATIVE] = 1.0  # each auxiliary classifier's CE (paper §3.3)
    paradoxical: Annotated[float, NON_NEGATIVE] = 1.0  # lambda of the paradoxical hinge (paper §3.3, §4.3)
    # [choice] the heads' MIL CE, mean over layers (only if model.head_mil)
    head_mil: Annotated[float, NON_NEGATIVE] = 1.0
    # [choice] the heads' value regression on the classifier's patch probabilities (0 = off: the paper)
    head_value: Annotated[float, NON_NEGATIVE] = 0.0
    # [choice] what the heads' value predicts: the classifier's probability for the patch, for each cell
    # of the patch, or the patch's novelty
    head_value_target: HeadValueTarget = "probability"
    # [choice] the target on a negative slide: as computed, or 0 everywhere (its look-alikes as hard
    # negatives)
    head_value_negatives: HeadValueNegatives = "target"

    def __post_init__(self) -> None:
        check_domains(self)
        check_choices(self)

    @property
    def wants_cell_logits(self) -> bool:
        """Whether the loss reads the final patches' cell logits (``MagNet.forward(cell_logits=True)``)."""
        return self.head_value > 0 and self.head_value_target == "cells"


@dataclass
class LossBreakdown:
    total: Tensor  # scalar, what to backpropagate
    final: Tensor  # scalar CE of the final logit
    aux: dict[int, Tensor] = field(default_factory=dict)  # layer (1-based) -> scalar CE
    paradoxical: Tensor = field(default_factory=lambda: torch.zeros(()))  # scalar hinge
    head_mil: Tensor = field(default_factory=lambda: torch.zeros(()))  # scalar, mean over layers (0 if off)
    head_value: Tensor = field(default_factory=lambda: torch.zeros(()))  # scalar (0 if off)


def paradoxical_loss(first_logits: Tensor, last_logits: Tensor, labels: Tensor) -> Tensor:
    """mean_slides max(0, CE(last) - sg(CE(first))): per-slide BCE, the first one detached."""
    first = F.binary_cross_entropy_with_logits(first_logits, labels, reduction="none").detach()
    last = F.binary_cross_entropy_with_logits(last_logits, labels, reduction="none")
    return torch.relu(last - first).mean()


def magnet_loss(output: MagNetOutput, labels: Tensor, weights: LossWeights | None = None) -> LossBreakdown:
    """The loss of a batch: ``labels`` ``(B,)`` in {0, 1} (any numeric dtype)."""
    weights = weights or LossWeights()
    labels = labels.to(device=output.logit.device, dtype=output.logit.dtype).view(-1)
    if labels.shape != output.logit.shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} for logits {tuple(output.logit.shape)}")
    final = F.binary_cross_entropy_with_logits(output.logit, labels)
    aux = {
        layer: F.binary_cross_entropy_with_logits(logits, labels)
        for layer, logits in sorted(output.aux_logits.items())
    }
    layers = sorted(output.aux_logits)
    if len(layers) >= 2:
        paradoxical = paradoxical_loss(output.aux_logits[layers[0]], output.aux_logits[layers[-1]], labels)
    else:
        paradoxical = final.new_zeros(())
    total = weights.final * final + weights.paradoxical * paradoxical
    for value in aux.values():
        total = total + weights.aux * value
    head_mil = final.new_zeros(())
    if output.head_logits:
        head_mil = torch.stack(
            [F.binary_cross_entropy_with_logits(logits, labels) for logits in output.head_logits.values()]
        ).mean()
        total = total + weights.head_mil * head_mil
    head_value = final.new_zeros(())
    if weights.head_value > 0 and output.scores:  # controls and the oracle have no heads to teach
        head_value = head_value_loss(output, weights.head_value_target,
                                     labels if weights.head_value_negatives == "zero" else None)
        total = total + weights.head_value * head_value
    return LossBreakdown(total=total, final=final, aux=aux, paradoxical=paradoxical, head_mil=head_mil,
                         head_value=head_value)


def head_value_loss(output: MagNetOutput, target: HeadValueTarget = "probability",
                    gate_labels: Tensor | None = None) -> Tensor:
    """CE of every ancestor head's score at points of its final patches against the detached ``target`` there
    (``magnet.models.head_value``: the classifier's probability for the patch or for each of its cells, or
    the patch's novelty; a patch-wide target is read at the patch's centre). With ``gate_labels`` ``(B,)``,
    every target of a slide labelled 0 is 0."""
    values = HEAD_VALUE_TARGETS[target](output)  # (B, N_L) or (B, N_L, h, w), checked before the heads
    if gate_labels is not None:
        values = gate_by_label(values, gate_labels)
    cells = values.dim() == 4
    points = cell_centres(*values.shape[-2:]) if cells else torch.zeros(1, 2, dtype=torch.float64)
    scores, mask = ancestor_scores(output, points)  # (B, M, N_L, G), (M, N_L)
    values = values.flatten(2) if cells else values.unsqueeze(-1)  # (B, N_L, G)
    per_point = F.binary_cross_entropy_with_logits(scores.float(), values.unsqueeze(1).expand_as(scores),
                                                   reduction="none")
    return per_point[:, mask].mean()
