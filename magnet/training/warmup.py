"""Head warm-up: teach the first layer's heads where to look before end-to-end training [choice].

[choice, not the paper] The first magnifying layer's heads see only the root view I0 of each slide, which
does not depend on any other part of the model. So they can be trained first, alone and cheaply: read every
training slide's root view once (view_size x view_size), then take many small Adam steps on the head-MIL
loss (``MagnifyingLayer`` with ``head_mil``: the LSE pool of the heads' score maps against the slide label),
with the 8 dihedral maps as augmentation. Only slide labels are used. In end-to-end training the same
heads get one step per batch of full forward passes (reads, sampler, classifier) and too few steps to learn
within a CPU budget; on cached root views a step costs milliseconds (``bench/head_mil_root.py``).

Deeper layers are not warmed up: their input is a patch chosen by the layer above, so they learn in the
main loop, where the first layer already sends them to the right place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from magnet.errors import ConfigError
from magnet.geometry import RegionSource
from magnet.models.magnifying import MagnifyingLayer

__all__ = ["dihedral_views", "read_root_view", "read_root_views", "warm_up_heads"]


def read_root_view(source: RegionSource, size: int) -> Tensor:
    """One slide's root view (identity ROI) at ``size`` x ``size``: ``(3, size, size)``."""
    identity = torch.eye(3, dtype=torch.float64)[None]
    with torch.no_grad():
        return source.read(identity, size)[0].float()


def read_root_views(sources: Sequence[RegionSource], size: int) -> Tensor:
    """Each slide's root view (identity ROI) at ``size`` x ``size``: ``(N, 3, size, size)``."""
    return torch.stack([read_root_view(source, size) for source in sources])


def dihedral_views(images: Tensor, index: int) -> Tensor:
    """One of the 8 dihedral maps of square images ``(..., H, W)``: quarter turns, then a flip for 4..7.

    On the square canvas these are the same 8 views the root ROI's dihedral maps give (``magnet.geometry``),
    as a set.
    """
    turned = images.rot90(index % 4, dims=(-2, -1))
    return turned.flip(-1) if index >= 4 else turned


def warm_up_heads(
    layer: MagnifyingLayer,
    views: Tensor,
    labels: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    progress: Callable[[float], object] | None = None,
) -> list[float]:
    """Train ``layer``'s heads (and its MIL bias) on root ``views`` ``(N, 3, V, V)`` with 0/1 ``labels``.

    Adam at ``lr`` for ``steps`` steps of ``batch_size`` slides drawn with replacement from ``generator``,
    each batch under one random dihedral map. Returns the loss of every step; ``progress(loss)`` is called
    after each. The layer's other parameters (none besides the heads and the MIL bias today) are left alone;
    the layer is left in train mode.
    """
    if not layer.head_mil or layer.mil_bias is None:
        raise ConfigError(
            "optim.head_warmup_steps > 0 needs model.head_mil=true (the warm-up trains the head-MIL loss)"
        )
    if layer.layer_index != 1:
        raise ValueError(f"only the first layer sees the root views, got layer {layer.layer_index}")
    if views.shape[0] != labels.shape[0] or views.shape[0] == 0:
        raise ValueError(f"{views.shape[0]} views for {labels.shape[0]} labels")
    params = [*layer.head_parameters(), layer.mil_bias]
    optimizer = torch.optim.Adam(params, lr=lr)
    layer.train()
    losses = []
    for _ in range(steps):
        pick = torch.randint(views.shape[0], (batch_size,), generator=generator)
        index = int(torch.randint(8, (1,), generator=generator))
        images = dihedral_views(views[pick], index)[:, None]  # (B, 1 parent, 3, V, V)
        logit = layer.mil_logit(layer.score_maps(images), layer.layout.view_masks(images))
        loss = F.binary_cross_entropy_with_logits(logit, labels[pick].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(losses[-1])
    return losses
