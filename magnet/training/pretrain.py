"""``magnet pretrain``: a cell encoder learned without labels on the patches a recipe's classifier will read.

[choice, not the paper] (docs/method.md §9). The recipe's tree, with its fixed layout (``model.zoom=fixed``:
its boxes depend on no weight, so no tree need be trained first), reads the final patches of every training
slide exactly as training will, at the classifier's input size; the cell encoder
(``magnet.models.cell_encoder``) then learns by contrastive learning on 32-px crops of them
(``magnet.training.contrastive``). No label is read, so the slides of any split, or unlabelled ones, could
serve; we take the training split so that validation and test slides stay unseen. The weights file is then
the recipe's ``model.backbone_weights`` with ``model.backbone=cell_encoder`` and ``model.pretrained=true``.

One slide that cannot be read is named and left out; the file is written atomically, or not at all.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from magnet.atomic import atomic_path
from magnet.data.manifest import ManifestRow
from magnet.errors import MagnetError, SlideError
from magnet.inference.runner import evaluation_mode
from magnet.models.cell_encoder import CELL_ENCODER_WIDTH, ENCODER_FILE_KIND
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig
from magnet.slides.pool import SlidePool
from magnet.training.contrastive import ContrastiveSettings, train_cell_encoder

__all__ = ["PretrainResult", "layout_model", "pretrain_encoder", "read_layout_patches"]


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    slides: int
    patches: int
    patch_px: int
    skipped: dict[str, str]
    first_loss: float
    last_loss: float
    seconds: float

    def summary(self) -> str:
        left = f", {len(self.skipped)} unreadable slide(s) left out" if self.skipped else ""
        return (f"cell encoder: {self.patches} patches of {self.slides} slides at {self.patch_px} px{left}; "
                f"contrastive loss {self.first_loss:.2f} -> {self.last_loss:.2f} ({self.seconds:.0f} s) "
                f"in {self.path}")


def layout_model(config: MagNetConfig) -> MagNet:
    """The tree of ``config`` with its fixed layout and a small CNN of random weights: only its boxes and
    its classifier's input size are used, so nothing pretrained is read."""
    fixed = dataclasses.replace(
        config, zoom="fixed", recentre=False, backbone="small", backbone_weights=None, pretrained=False,
        freeze_backbone=False, aux_layers=(), aux_pretrained=None,
    )
    return MagNet(fixed, load_weights=False).eval()


@torch.no_grad()
def read_layout_patches(model: MagNet, rows: Sequence[ManifestRow], pool: SlidePool,
                        echo: Callable[[str], None]) -> tuple[Tensor, dict[str, str]]:
    """Every readable slide's final patches ``(M, 3, s, s)`` as 8-bit pixels at the classifier's input
    size, and the slides left out with their reasons."""
    kept: list[Tensor] = []
    skipped: dict[str, str] = {}
    with evaluation_mode(model):
        for row in rows:  # one at a time: a bad slide costs only itself
            try:
                patches = model.final_patches([pool.get(row.slide)]).patches[-1]
            except SlideError as error:
                skipped[row.slide] = str(error)
                echo(f"skipped {row.slide}: {error.reason}")
                continue
            images = model.classifier.input_images(patches)
            kept.append((images.clamp(0, 1) * 255).round().to(torch.uint8))
    if not kept:
        raise MagnetError("no training slide could be read: nothing to pre-train on")
    return torch.cat(kept), skipped


def pretrain_encoder(config: MagNetConfig, rows: Sequence[ManifestRow], pool: SlidePool, out: str | Path,
                     settings: ContrastiveSettings | None = None,
                     echo: Callable[[str], None] = lambda line: None) -> PretrainResult:
    """Read the fixed layout's patches of ``rows``, train the cell encoder on them, write it to ``out``."""
    settings = settings or ContrastiveSettings()
    start = time.perf_counter()
    patches, skipped = read_layout_patches(layout_model(config), rows, pool, echo)
    slides = len(rows) - len(skipped)
    echo(f"read {len(patches)} patches of {slides} slides ({time.perf_counter() - start:.0f} s)")
    encoder, losses = train_cell_encoder(patches, settings, echo)
    saved = {
        "kind": ENCODER_FILE_KIND,
        "width": CELL_ENCODER_WIDTH,
        "state_dict": encoder.state_dict(),
        "patch_px": int(patches.shape[-1]),
        "slides": slides,
        "settings": dataclasses.asdict(settings),
    }
    try:
        with atomic_path(out) as tmp:
            torch.save(saved, tmp)
    except OSError as error:  # a full disk, a read-only folder: said in one line, nothing half-written
        where = f": {error.filename}" if error.filename else ""
        raise MagnetError(f"{out}: cannot write the encoder ({error.strerror or error}{where})") from error
    return PretrainResult(Path(out), slides, len(patches), int(patches.shape[-1]), skipped,
                          losses[0], losses[-1], time.perf_counter() - start)
