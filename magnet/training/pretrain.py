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
from magnet.data.manifest import ManifestRow, read_manifest
from magnet.errors import MagnetError
from magnet.models.cell_encoder import ENCODER_FILE_KIND, CellEncoder
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig
from magnet.slides.colour import normaliser
from magnet.slides.pool import SlidePool
from magnet.training.contrastive import ContrastiveSettings, train_cell_encoder
from magnet.training.readout_refit import final_patch_features
from magnet.training.recipe import TrainConfig

__all__ = ["PretrainResult", "layout_model", "layout_pixels", "pretrain_encoder", "pretrain_recipe",
           "write_encoder_file"]


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


def layout_pixels(model: MagNet) -> Callable[[Tensor], Tensor]:
    """Final patches ``(B, N, 3, S, S)`` as 8-bit pixels ``(B*N, 3, s, s)`` at the classifier's input size."""
    return lambda patches: (model.classifier.input_images(patches).clamp(0, 1) * 255).round().to(torch.uint8)


def write_encoder_file(encoder: CellEncoder, path: str | Path, *, patch_px: int, slides: int,
                       settings: ContrastiveSettings) -> None:
    """The weights file ``model.backbone_weights`` names (read by ``load_encoder_weights``), written
    atomically, with what it was learned from: the patches' side, the slides, the training settings."""
    saved = {"kind": ENCODER_FILE_KIND, "width": encoder.width, "state_dict": encoder.state_dict(),
             "patch_px": patch_px, "slides": slides, "settings": dataclasses.asdict(settings)}
    try:
        with atomic_path(path) as tmp:
            torch.save(saved, tmp)
    except OSError as error:  # a full disk, a read-only folder: said in one line, nothing half-written
        where = f": {error.filename}" if error.filename else ""
        raise MagnetError(f"{path}: cannot write the encoder ({error.strerror or error}{where})") from error


def pretrain_encoder(config: MagNetConfig, rows: Sequence[ManifestRow], pool: SlidePool, out: str | Path,
                     settings: ContrastiveSettings | None = None,
                     echo: Callable[[str], None] = lambda line: None) -> PretrainResult:
    """Read the fixed layout's patches of ``rows``, train the cell encoder on them, write it to ``out``."""
    settings = settings or ContrastiveSettings()
    start = time.perf_counter()
    model = layout_model(config)
    read = final_patch_features(model, rows, pool, batch_size=1, encode=layout_pixels(model))
    for reason in read.skipped.values():
        echo(f"skipped {reason}")
    if not read.slides:
        raise MagnetError("no training slide could be read: nothing to pre-train on")
    patches, slides = read.features, len(read.slides)
    echo(f"read {len(patches)} patches of {slides} slides ({time.perf_counter() - start:.0f} s)")
    encoder, losses = train_cell_encoder(patches, settings, echo)
    write_encoder_file(encoder, out, patch_px=int(patches.shape[-1]), slides=slides, settings=settings)
    return PretrainResult(Path(out), slides, len(patches), int(patches.shape[-1]), read.skipped,
                          losses[0], losses[-1], time.perf_counter() - start)


def pretrain_recipe(cfg: TrainConfig, out: str | Path, settings: ContrastiveSettings | None = None,
                    echo: Callable[[str], None] = lambda line: None) -> PretrainResult:
    """``pretrain_encoder`` on the training split of ``cfg``'s manifest, read as ``cfg.data`` says."""
    rows = [r for r in read_manifest(cfg.data.manifest, check_slides=False).rows
            if r.split == cfg.data.train_split]
    if not rows:
        raise MagnetError(f"{cfg.data.manifest}: no slide of split {cfg.data.train_split!r} to pre-train on")
    pool = SlidePool(grey_filter=cfg.data.grey_filter, threads=cfg.data.reader_threads,
                     max_open=cfg.data.max_open_slides, wrap=normaliser(cfg.data.stain_norm))
    try:
        return pretrain_encoder(cfg.model, rows, pool, out, settings, echo)
    finally:
        pool.close()
