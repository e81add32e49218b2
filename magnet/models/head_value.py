"""What each final patch's ancestors' heads said of its place [choice, docs/method.md §9, "head value"].

The paper's heads learn where to zoom through the sampler's gradient (§3.1), which follows texture and
diverged in our runs; head MIL (``zoom_levers.HeadMilPool``) teaches a head what to look at from the slide
label, which only works where the head's own view can tell a lesion from its look-alikes. Head value fills
the gap between the two: a head learns *where the classifier finds tumour*. For every final patch j and
every layer l whose heads placed one of j's ancestors, the raw score map of that head is read (bilinearly)
at j's centre in the head's parent view; the loss (``magnet.training.losses``, weight ``loss.head_value``)
trains that score to predict the classifier's probability for j, detached. A head's score map so becomes an
estimate of "what the classifier will say if we zoom here", learned from the patches actually visited; the
sparsemax map peaks where the score does, so the boxes go where the classifier is expected to fire. Credit
for a find at cellular resolution reaches every coarser layer, whatever its own view can resolve. In the
terms of reinforcement learning the score map is a value function fitted by regression on the places
visited (no policy gradient): the boxes follow it greedily.

What the score learns to predict is the *target* (``loss.head_value_target``, ``HEAD_VALUE_TARGETS``):

- ``probability`` (default): the classifier's probability for the patch, as above.
- ``cells`` [choice]: the classifier's probability for each cell of the patch (``cell_probability``: the
  readout's per-patch head on each cell of the CNN's last spatial map, 7 x 7 for Lite0 at 224 px), each
  read against the ancestor's score at that cell's centre. One number per patch says whether the classifier
  fired somewhere in it; the map says where, so a head whose view resolves the cue that marks a lesion
  (a texture at 8-16 um/px, say) is shown which of the pixels it saw led there, 49 targets per patch
  instead of one, at no extra read (one more pass of the CNN, without gradient). Dense targets from a
  finer model's output for a coarser one are knowledge distillation (Hinton et al., 2015); the per-cell
  map is the class activation map of Zhou et al. (CVPR 2016) through the readout's own head.
- ``novelty`` [choice]: how far the patch's CNN features lie from the batch's typical final patch, as a
  number in (0, 1): sigmoid of the distance to the batch's mean feature, standardised over the batch's
  patches. It needs no label and no trained readout. Why: where a coarse view cannot tell a lesion from
  its look-alikes, the classifier's probability teaches the heads to *avoid* both (on negative slides the
  look-alikes score low), while a zoom that cannot tell them apart should read all of them and leave the
  choice to the classifier at cellular resolution; what sets lesions and look-alikes apart from plain
  tissue at the finest scale is that their cells look unlike the rest of the slide. The head so learns
  "something unusual lies here", curiosity-style (the prediction-error rewards of Pathak et al., ICML 2017,
  and the saliency of Itti et al., PAMI 1998, are the idea's neighbours; the rule here is ours).

On a negative slide every one of these targets can be high where the patches visit a look-alike the
classifier mistakes for a lesion, and the heads then learn to send the next slide's boxes to look-alikes.
``loss.head_value_negatives`` = ``zero`` [choice] (``gate_by_label``) sets the target of every patch of a
negative slide to 0, so what a head learns to score high is "the classifier fires here *and* the slide is
positive": where a coarse view holds any cue that sets lesions apart from their mimics, the heads are
pushed to use it (hard-negative mining, as in Felzenszwalb et al., PAMI 2010, with the slide label as the
only annotation: every place visited on a negative slide is a negative).

Everything is read off the output's shapes: N_l patches at layer l (``rois``), K_heads = heads per parent
(``scores``), P_l - K_heads frozen children first in each parent's group (paper §4.3), depth-first order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from magnet.models.magnet import MagNetOutput

__all__ = ["HEAD_VALUE_TARGETS", "HeadValueNegatives", "HeadValueTarget", "ancestor_scores",
           "cell_probability", "classifier_probability", "feature_novelty", "gate_by_label"]

HeadValueTarget = Literal["probability", "cells", "novelty"]
HeadValueNegatives = Literal["target", "zero"]


def classifier_probability(output: MagNetOutput) -> Tensor:
    """The classifier's probability ``(B, N_L)`` for each final patch, detached."""
    if output.patch_logits is None:
        raise ValueError("loss.head_value needs a logit per final patch: model.readout max, lse or attention")
    return torch.sigmoid(output.patch_logits.detach().float())


def cell_probability(output: MagNetOutput) -> Tensor:
    """The classifier's probability ``(B, N_L, h, w)`` for each cell of each final patch, detached."""
    if output.patch_cell_logits is None:
        raise ValueError("the cells target needs the final patches' cell logits: MagNet.forward(..., "
                         "cell_logits=True), with model.readout max, lse or attention")
    return torch.sigmoid(output.patch_cell_logits.detach().float())


def feature_novelty(output: MagNetOutput) -> Tensor:
    """sigmoid of each final patch's standardised distance ``(B, N_L)`` from the batch's mean patch feature.

    0.5 everywhere when the batch has fewer than two patches or all lie at one distance (nothing stands out).
    """
    if output.patch_features is None:
        raise ValueError("the novelty target needs the final patches' features: a full MagNet forward")
    features = output.patch_features.detach().float()  # (B, N, D)
    distance = (features - features.flatten(0, 1).mean(0)).norm(dim=-1)  # (B, N)
    if distance.numel() < 2:
        return torch.full_like(distance, 0.5)
    spread = distance.std()
    if not bool(spread > 1e-6 * distance.mean().clamp(min=1e-12)):
        return torch.full_like(distance, 0.5)
    return torch.sigmoid((distance - distance.mean()) / spread)


HEAD_VALUE_TARGETS: dict[str, Callable[[MagNetOutput], Tensor]] = {
    "probability": classifier_probability,
    "cells": cell_probability,
    "novelty": feature_novelty,
}
assert set(HEAD_VALUE_TARGETS) == set(get_args(HeadValueTarget))


def gate_by_label(values: Tensor, labels: Tensor) -> Tensor:
    """``values`` ``(B, ...)`` with every entry of a slide whose label is 0 set to 0 (``labels`` ``(B,)``)."""
    if labels.shape != values.shape[:1]:
        raise ValueError(f"{tuple(labels.shape)} labels for head-value targets of shape "
                         f"{tuple(values.shape)}")
    positive = (labels.detach() > 0.5).to(values.dtype)
    return values * positive.view(-1, *([1] * (values.dim() - 1)))


def ancestor_scores(output: MagNetOutput, points: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Scores ``(B, M, N_L)`` and a mask ``(M, N_L)``: for the M layers with heads (``output.scores``, in
    layer order) and each final patch, the score its ancestor's head gave the patch's centre. With
    ``points`` ``(G, 2)`` ((x, y) in each final patch's own [-1, 1] frame), the scores at those points of
    every final patch: ``(B, M, N_L, G)``.

    The mask is False where the ancestor at that layer has no head (the frozen child).
    """
    if output.root_rois is None or not output.rois:
        raise ValueError("ancestor_scores needs the ROIs of a MagNet forward")
    final = output.rois[-1]  # (B, N_L, 3, 3)
    batch, count = final.shape[:2]
    local_points = final.new_zeros(1, 2) if points is None else points.to(final)
    grid_count = local_points.shape[0]
    homogeneous = torch.cat([local_points, local_points.new_ones(grid_count, 1)], dim=-1)  # (G, 3)
    centres = final @ homogeneous.T  # (B, N_L, 3, G): the points on the canvas, one column each
    scores, masks = [], []
    for layer, maps in sorted(output.scores.items()):
        parents = output.root_rois.unsqueeze(1) if layer == 1 else output.rois[layer - 2]  # (B, N_p, 3, 3)
        num_parents, num_children = parents.shape[1], output.rois[layer - 1].shape[1]
        per_parent = num_children // num_parents  # P_l
        heads_per_parent = maps.shape[1] // num_parents  # K_heads
        frozen = per_parent - heads_per_parent
        child = torch.arange(count, device=final.device) // (count // num_children)  # ancestor at layer l
        parent, k = child // per_parent, child % per_parent
        has_head = k >= frozen
        head = parent * heads_per_parent + (k - frozen).clamp(min=0)
        # The points in the parent's view, [-1, 1] across the view I the head saw: one solve per patch,
        # its G points the columns of the right-hand side. (B, N_L, G, 2)
        local = torch.linalg.solve(parents[:, parent], centres)[..., :2, :].transpose(-1, -2)
        chosen = maps[:, head]  # (B, N_L, V, V)
        grid = local.to(maps.dtype).reshape(batch * count, 1, grid_count, 2)
        read = F.grid_sample(chosen.reshape(batch * count, 1, *maps.shape[-2:]), grid, mode="bilinear",
                             padding_mode="border", align_corners=False)
        scores.append(read.view(batch, count, grid_count))
        masks.append(has_head)
    if not scores:
        empty = final.new_zeros(batch, 0, count, grid_count, dtype=torch.float32)
        stacked, mask = empty, torch.zeros(0, count, dtype=torch.bool, device=final.device)
    else:
        stacked, mask = torch.stack(scores, dim=1), torch.stack(masks)
    return (stacked[..., 0] if points is None else stacked), mask
