"""What the readout reads: the last layer's patches as sampled (the paper), each read again at its box
(``model.final_read=direct``), or moved onto where the classifier sees tumour in it and read again
(``model.recentre``) [choices, docs/method.md §9].

**Direct read.** In the paper the final patch is the sampler's output from its parent's read ``I'`` at
``final_read_size`` (§3.1), so a box of side ``a`` (as a share of its parent) holds at most
``a * final_read_size`` pixels of slide, resampled to ``final_size``: for the ``magnet3`` tree as set for
8-mm virtual slides (last box a = 0.33 of a 448-px read) 148 px of slide drawn as 224, 3 um of detail per
pixel where the box's side says 2; for the Camelyon recipe's (a = 0.16) 72 px, 6.3 um. A direct read takes
the box's pixels from the slide at ``final_size``, at the resolution the box's side names, as the oracle
control does; on virtual slides isolated tumour cells under such boxes are told from their look-alikes at
1 um per pixel and not at 2 (docs/BENCHMARKS.md, "Isolated tumour cells at 1 um per pixel"). Pixels: one
read of final_size² per final patch (for ``magnet3``, 18 x 224² = 0.9 Mpx per slide) in place of the last
layer's parents' final_read_size reads, which ``MagNet`` then does not make (6 x 448² = 1.2 Mpx). No
gradient reaches theta through the new read (theta_grad or not).

**Re-centring.**

The heads place the final boxes from their views at 9-73 um per pixel; the classifier reads the patches at
about 2 um per pixel, where cells show. A box that lands with its rim on a small lesion holds a sliver of it,
and a patch with less than a tenth of its area on a micro-metastasis scored like a benign look-alike
(docs/BENCHMARKS.md, "Seed 2 on version 4"). The re-centring step uses the finer look the classifier already
has: its per-patch head applied to each cell of the CNN's last spatial map (``Classifier.cell_logits``)
scores every part of the patch, and the box moves, at the same scale, so that its highest-scoring cell is
at its centre; the moved box is read again, directly from the slide at the final size, and that read is
what the readout classifies. A saccade in the sense of Mnih et al. (NeurIPS 2014, recurrent models of
visual attention), with the glimpse's own classifier as the guide; the rule here is ours.

The move is chosen without gradient and the new patch is a fresh read, so no loss reaches the last layer's
theta through it (theta_grad or not); the heads' thetas stay in the output as the heads chose them, while
the ROIs, level-0 boxes and patches of the last layer become the moved ones, so everything downstream (head
value, the hit rate, ``magnet explain``) sees the boxes actually read. Pixels: one more read of final_size²
per final patch (for ``magnet3``, 18 x 224² = 0.9 Mpx per slide), counted by the readers like every read.
The oracle control keeps its given boxes (it is told where the lesions are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from magnet.geometry import RegionSource, box_sides, cell_centres, compose, read_views, roi_to_level0_box

if TYPE_CHECKING:  # the model imports this module; these are for annotations only
    from magnet.models.classifier import Classifier
    from magnet.models.magnet import MagNetOutput
    from magnet.models.model_config import MagNetConfig

__all__ = [
    "FinalStep", "centring_theta", "final_detail_px", "keep_final", "read_final_directly",
    "reads_final_boxes", "recentre_final",
]

# What the model does with its last layer's patches before the readout: (output, sources, classifier,
# final_size) -> None, changing ``output`` in place.
FinalStep = Callable[["MagNetOutput", Sequence[RegionSource], "Classifier", int], None]


def reads_final_boxes(config: MagNetConfig) -> bool:
    """Whether the final patches are reads of their boxes at ``final_size`` (``final_read=direct``, the
    re-centring step, the oracle's given boxes), not the sampler's draws from the parents' reads."""
    return config.final_read == "direct" or config.recentre or config.zoom == "oracle"


def final_detail_px(config: MagNetConfig, layers: Sequence[Sequence[Sequence[float]]],
                    root_side: float) -> np.ndarray:
    """``(N_L,)`` pixels of slide across each final patch's side: ``final_size`` where the patch is a read
    of its box (``reads_final_boxes``), else the part of its parent's ``final_read_size`` read that the box
    covers, at most ``final_size`` (the sampler draws no finer than its source).

    ``layers``: per layer, the level-0 boxes ``(x0, y0, x1, y1)`` in depth-first order (final patch ``n``'s
    parent is box ``n // P_L`` of the layer before); ``root_side``: the level-0 side of the root ROI, the
    parent of a one-layer tree."""
    sides = box_sides(layers[-1])
    if reads_final_boxes(config):
        return np.full(len(sides), float(config.final_size))
    if len(layers) > 1:
        parent_sides = box_sides(layers[-2])
        parent_sides = np.repeat(parent_sides, len(sides) // len(parent_sides))
    else:
        parent_sides = np.full(len(sides), float(root_side))
    return np.minimum(float(config.final_size), sides / parent_sides * config.final_read_size)


def centring_theta(cell_logits: Tensor) -> Tensor:
    """``(B, N, 3)`` theta ``(s = 1, tx, ty)``, float64, that moves each box so that its highest cell of
    ``cell_logits`` ``(B, N, h, w)`` is at its centre (cells centred as ``magnet.geometry.cell_centres``)."""
    centres = cell_centres(*cell_logits.shape[-2:]).to(cell_logits.device)
    moved = centres[cell_logits.flatten(-2).argmax(-1)]  # (B, N, 2)
    return torch.cat([torch.ones_like(moved[..., :1]), moved], -1)


def keep_final(output: MagNetOutput, sources: Sequence[RegionSource], classifier: Classifier,
               final_size: int) -> None:
    """The paper: the readout reads the last layer's patches as they were sampled."""


def read_final_directly(output: MagNetOutput, sources: Sequence[RegionSource], classifier: Classifier,
                        final_size: int) -> None:
    """Replace each final patch by a direct read of its box at ``final_size`` (``model.final_read=direct``):
    the box's own resolution, not the parent read's (the module's docstring)."""
    patches = output.patches[-1]
    output.patches[-1] = read_views(sources, output.rois[-1], final_size, patches.device).to(patches.dtype)


def recentre_final(output: MagNetOutput, sources: Sequence[RegionSource], classifier: Classifier,
                   final_size: int) -> None:
    """Move each final box onto its highest-scoring cell and read it again (the module's docstring)."""
    patches = output.patches[-1]
    rois = output.rois[-1]  # (B, N, 3, 3) float64
    moved = compose(rois, centring_theta(classifier.cell_logits(patches)).to(rois.device))  # no gradient
    output.rois[-1] = moved
    output.boxes_level0[-1] = torch.stack(
        [roi_to_level0_box(r, s.slide_size) for r, s in zip(moved, sources, strict=True)]
    ).to(output.boxes_level0[-1].dtype)
    read_final_directly(output, sources, classifier, final_size)
