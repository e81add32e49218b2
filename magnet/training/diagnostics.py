"""Per-epoch diagnostics of the zoom, one row per epoch in ``metrics.csv`` and TensorBoard.

For each magnifying layer: the mean zoom s, the mean sparsemax support size, the heads' gradient norm, and
where the layer's boxes go (tissue share, lesion share). A collapsing support or s pinned at ``min_scale``
shows the sparsemax collapse trap (docs/method.md §2.4); a head gradient norm of 0 shows heads that get no
signal (or a zoom control, which uses no heads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from magnet.inference.oracle import tissue_mask
from magnet.metrics.localisation import LesionAreas
from magnet.models.magnet import MagNet, MagNetOutput
from magnet.models.magnifying import MagnifyingLayer

__all__ = ["DIAGNOSTIC_GRID_CELLS", "ZoomDiagnostics", "diagnostic_fields"]

# [choice] lesion masks of the lesion_share diagnostic: 256 cells along the longer side (the evaluation uses
# 1024), so the masks cached for a whole run stay small (a lesion a quarter of the slide wide: 64^2 cells).
DIAGNOSTIC_GRID_CELLS = 256


def diagnostic_fields(num_layers: int) -> tuple[str, ...]:
    """Column names: mean s, support, head gradient norm, tissue and lesion share, per layer."""
    return tuple(f"{name}_layer{layer}" for layer in range(1, num_layers + 1)
                 for name in ("mean_s", "support", "head_grad", "tissue_share", "lesion_share"))


class ZoomDiagnostics:
    """Running means over an epoch of each layer's zoom diagnostics.

    ``tissue_share``: the share of the layer's patch pixels that the grey filter keeps (``tissue_mask``: not
    black, i.e. not glass, background or off the slide), per forward. ``lesion_share``: the share of the
    layer's summed ROI area inside lesions (``LesionAreas``, as the evaluation's lesion share), averaged over
    the slides with lesion outlines [choice: negatives have none, so they would only dilute it]; NaN without
    outlines. ``areas`` caches each slide's lesion mask across epochs.
    """

    def __init__(self, num_layers: int, outlines: dict[str, list[Any]] | None = None,
                 areas: dict[str, LesionAreas] | None = None) -> None:
        self.sums = dict.fromkeys(diagnostic_fields(num_layers), 0.0)
        self.lesion_slides = dict.fromkeys(range(1, num_layers + 1), 0)
        self.outlines = outlines
        self.areas = {} if areas is None else areas
        self.forwards = 0
        self.steps = 0

    def add_forward(self, out: MagNetOutput, slides: Sequence[str] = (),
                    sizes: Sequence[tuple[int, int]] = ()) -> None:
        """One forward's output ``out`` of slides ``slides`` (level-0 sizes ``sizes``)."""
        self.forwards += 1
        for layer, (theta, support) in enumerate(zip(out.thetas, out.support, strict=True), start=1):
            self.sums[f"mean_s_layer{layer}"] += float(theta[..., 0].detach().float().mean())
            if support.numel():
                self.sums[f"support_layer{layer}"] += float(support.float().mean())
            tissue = tissue_mask(out.patches[layer - 1])
            self.sums[f"tissue_share_layer{layer}"] += float(tissue.float().mean())
        if self.outlines is None:
            return
        for b, (name, size) in enumerate(zip(slides, sizes, strict=True)):
            polygons = self.outlines.get(name) or []
            if not len(polygons):
                continue
            if name not in self.areas:
                self.areas[name] = LesionAreas(polygons, size, DIAGNOSTIC_GRID_CELLS)
            for layer, boxes in enumerate(out.boxes_level0, start=1):
                share = self.areas[name].share(boxes[b].detach().cpu().numpy())
                self.sums[f"lesion_share_layer{layer}"] += share
                self.lesion_slides[layer] += 1

    def add_gradients(self, model: MagNet) -> None:
        """The heads' gradient norm per layer, once per optimiser step (before the gradients are cleared)."""
        self.steps += 1
        for layer, module in enumerate(model.layers, start=1):
            assert isinstance(module, MagnifyingLayer)
            grads = [p.grad.detach().float().norm() for p in module.head_parameters() if p.grad is not None]
            if grads:
                self.sums[f"head_grad_layer{layer}"] += float(torch.stack(grads).norm())

    def means(self) -> dict[str, float]:
        result = {}
        for key, value in self.sums.items():
            if key.startswith("lesion_share"):
                count = self.lesion_slides[int(key.rsplit("layer", 1)[1])]
                result[key] = value / count if count else math.nan
            else:
                result[key] = value / max(self.steps if key.startswith("head_grad") else self.forwards, 1)
        return result
