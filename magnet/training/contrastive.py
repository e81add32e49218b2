"""Contrastive pre-training of the cell encoder on unlabelled patches (``magnet pretrain``).

SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A simple framework for contrastive learning of visual
representations", ICML; the loss is their eq. 1, NT-Xent): two views of one image are a positive pair and
every other view in the batch a negative; each view's embedding, through a small projection MLP that is
thrown away after training, must pick its partner out of the 2N - 1 others by cosine similarity over a
temperature. Written here from the paper's description.

Our views [choice] (docs/method.md §9): two 32-px crops (one cell of ``magnet.models.cell_encoder``) of the
same patch whose corners lie at most ``shift`` px apart, each flipped, turned by quarter turns and given a
mild saturation, contrast and brightness change. Nearby crops share cells but not their placement, so the
encoder learns what the cells look like, not where they are; the colour changes are kept mild because
colour is part of what tells a tumour cell from a lymphocyte. No label is read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magnet.models.cell_encoder import CELL_PX, CellEncoder

__all__ = ["ContrastiveSettings", "crop_pairs", "jitter", "nt_xent", "train_cell_encoder"]


@dataclass(frozen=True)
class ContrastiveSettings:
    """How ``train_cell_encoder`` learns (defaults: 6 minutes on 2 CPU cores)."""

    steps: int = 600
    batch: int = 256  # crop pairs per step: 510 negatives per crop
    shift: int = 8  # px between the corners of a pair's crops
    lr: float = 2e-3  # AdamW, cosine schedule to 0
    temperature: float = 0.2
    seed: int = 0


def jitter(crops: Tensor, generator: torch.Generator) -> Tensor:
    """Each crop ``(N, 3, s, s)`` in [0, 1] flipped at random, turned by 0-3 quarter turns, and its
    saturation and contrast scaled by 0.8-1.2 and its brightness by 0.9-1.1."""
    n = len(crops)
    flip = torch.rand(n, generator=generator) < 0.5
    crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    turns = torch.randint(0, 4, (n,), generator=generator)
    crops = crops.clone()
    for k in range(1, 4):  # one call per quarter turn, on the crops that drew it
        chosen = turns == k
        crops[chosen] = torch.rot90(crops[chosen], k, (-2, -1))

    def scale(spread: float) -> Tensor:
        return 1 + spread * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)

    grey = crops.mean(1, keepdim=True)
    crops = grey + (crops - grey) * scale(0.2)  # saturation
    mean = crops.mean((1, 2, 3), keepdim=True)
    crops = mean + (crops - mean) * scale(0.2)  # contrast
    return (crops * scale(0.1)).clamp(0, 1)  # brightness


def crop_pairs(patches: Tensor, batch: int, shift: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` pairs of 32-px crops of random patches ``(M, 3, S, S)`` (uint8), in [0, 1]: the second
    crop's corner at most ``shift`` px from the first's in each direction."""
    _, _, height, width = patches.shape
    if min(height, width) < CELL_PX + 2 * shift:
        raise ValueError(f"patches of {height}x{width} px: too small for {CELL_PX}-px crops {shift} px apart")
    index = torch.randint(0, len(patches), (batch,), generator=generator)
    y = torch.randint(shift, height - CELL_PX - shift + 1, (batch,), generator=generator)
    x = torch.randint(shift, width - CELL_PX - shift + 1, (batch,), generator=generator)
    dy = torch.randint(-shift, shift + 1, (batch,), generator=generator)
    dx = torch.randint(-shift, shift + 1, (batch,), generator=generator)
    offsets = torch.arange(CELL_PX)

    def crops(top: Tensor, left: Tensor) -> Tensor:
        rows = (top[:, None] + offsets)[:, None, :, None]  # (batch, 1, 32, 1)
        cols = (left[:, None] + offsets)[:, None, None, :]  # (batch, 1, 1, 32)
        channels = torch.arange(3)[None, :, None, None]
        return patches[index[:, None, None, None], channels, rows, cols].float() / 255

    return crops(y, x), crops(y + dy, x + dx)


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss (eq. 1) over embeddings ``a``, ``b`` ``(N, d)`` where ``a[i]`` and ``b[i]`` are a pair:
    the mean over all 2N views of the cross-entropy of finding the partner among the 2N - 1 others."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(a)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(similarity, partner)


def train_cell_encoder(patches: Tensor, settings: ContrastiveSettings | None = None,
                       echo: Callable[[str], None] = lambda line: None) -> tuple[CellEncoder, list[float]]:
    """A ``CellEncoder`` trained by NT-Xent on crop pairs of ``patches`` ``(M, 3, S, S)`` (uint8, no
    labels), in evaluation mode, and the loss of every step."""
    settings = settings or ContrastiveSettings()
    torch.manual_seed(settings.seed)
    encoder = CellEncoder()
    width = encoder.width
    projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 64))
    optimiser = torch.optim.AdamW([*encoder.parameters(), *projection.parameters()], lr=settings.lr,
                                  weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    start = time.perf_counter()
    encoder.train()
    for step in range(1, settings.steps + 1):
        first, second = crop_pairs(patches, settings.batch, settings.shift, generator)
        views = [jitter(crops, generator) for crops in (first, second)]
        embeddings = [projection(encoder.dense_map(view).mean((-2, -1))) for view in views]
        loss = nt_xent(embeddings[0], embeddings[1], settings.temperature)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"contrastive loss not finite at step {step}: lower the learning rate")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == settings.steps:
            echo(f"pretrain step {step}/{settings.steps}: loss {sum(losses[-100:]) / len(losses[-100:]):.3f} "
                 f"({time.perf_counter() - start:.0f} s)")
    return encoder.eval(), losses
