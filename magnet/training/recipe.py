"""The training recipe: every knob of a run as typed dataclasses whose defaults are the paper's.

A recipe YAML (``configs/*.yaml``) is read into ``TrainConfig`` by ``magnet.config_io.load_config``, which
rejects unknown keys; ``--set key=value`` overrides any field; the resolved config is saved beside every
run and inside every checkpoint. Defaults follow the paper §4 and docs/method.md §5 (Adam 3e-5, cosine
annealing, 200 epochs, batch 16, dihedral augmentation, grey filter); keys marked [choice] are ours.
Each number's allowed range is declared in its annotation (``magnet.domains``) and checked whenever a
config is built, so a NaN learning rate or a zero batch size never reaches the training loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

from magnet.domains import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    AtLeast,
    DomainError,
    Interval,
    check_domains,
)
from magnet.errors import ConfigError
from magnet.models.model_config import MagNetConfig, ReadoutInstances
from magnet.slides.colour import StainNorm
from magnet.training.losses import LossWeights


@dataclass
class ColourAugmentConfig:
    """[choice, docs/method.md §10] Stain and colour augmentation: one draw per training slide and epoch,
    applied to every read of that slide (root, every layer, final patches) by ``magnet.slides.colour``.
    All zero: off, the pixels the model reads are the slide's. Why: a model trained at one centre's stain
    and scanner fails at another's (docs/BENCHMARKS.md, "Stain and scanner shift"); Tellez et al. 2019
    found colour augmentation (HSV or HED) the most important factor for generalising across centres."""

    # s: each of the H, E, DAB concentrations is scaled by alpha ~ U(1 - s, 1 + s) (Tellez et al. 2018)
    hed_scale: Annotated[float, FRACTION] = 0.0
    # b: ... and shifted by beta ~ U(-b, b) (optical-density units)
    hed_shift: Annotated[float, Interval(0, 0.5)] = 0.0
    brightness: Annotated[float, FRACTION] = 0.0  # gain ~ U(1 - x, 1 + x)
    contrast: Annotated[float, FRACTION] = 0.0  # factor about mid-grey ~ U(1 - x, 1 + x)
    saturation: Annotated[float, FRACTION] = 0.0  # factor about each pixel's luma ~ U(1 - x, 1 + x)
    # a scanner's softness: Gaussian sigma ~ U(0, x) output pixels, per slide (each read is blurred)
    blur_px: Annotated[float, Interval(0, 5)] = 0.0
    # a scanner's compression: JPEG quality ~ U(x, 100) per slide; 0: none
    jpeg_min_quality: Annotated[int, Interval(0, 100)] = 0

    def __post_init__(self) -> None:
        check_domains(self)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


@dataclass
class DataConfig:
    manifest: str = ""  # manifest CSV: slide,label[,lesion_class,split,patient]
    train_split: str = "train"
    val_split: str = "validation"  # empty: no validation (e.g. retraining on train + validation, paper §4.1)
    augment: bool = True  # the 8 dihedral maps folded into the root ROI (paper §4.2)
    grey_filter: bool = True  # paper §4.2: max-min < 15 becomes black
    reader_threads: Annotated[int, AtLeast(1)] = 2  # region reads per slide run in a thread pool
    skip_bad: bool = False  # drop bad manifest rows (reported) instead of refusing to start
    # [choice] LRU of open slide handles; virtual slides cost nothing to reopen
    max_open_slides: Annotated[int, AtLeast(1)] = 64
    # [choice] Slides that fail to read during training (warm-up included) or validation are logged once,
    # skipped, and listed after each epoch; the run stops when more than this share of a split has failed
    # (a wrong mount or a truncated copy, not the odd corrupt file). 0: stop at the first failure.
    max_failed_share: Annotated[float, FRACTION] = 0.05
    # [choice, docs/method.md §10] stain and colour augmentation of training reads (all zero: off)
    colour: ColourAugmentConfig = field(default_factory=ColourAugmentConfig)
    # [choice, docs/method.md §10] stain normalisation of every read, in training and at inference:
    # "reinhard" moves each slide's colour statistics to a fixed target (Reinhard et al. 2001); "none": off
    stain_norm: StainNorm = "none"

    def __post_init__(self) -> None:
        check_domains(self)


@dataclass
class OptimConfig:
    lr: Annotated[float, POSITIVE] = 3e-5  # paper §4.3, for ImageNet-pretrained backbones
    # [choice] learning rate of the localisation heads; 0 = same as lr
    head_lr: Annotated[float, NON_NEGATIVE] = 0.0
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    epochs: Annotated[int, AtLeast(1)] = 200  # paper §4.3
    batch_size: Annotated[int, AtLeast(1)] = 16  # paper: 16 for 3 layers, 8 for 4 layers
    grad_accum: Annotated[int, AtLeast(1)] = 1  # batches per optimiser step
    grad_clip: Annotated[float, NON_NEGATIVE] = 0.0  # [choice] max gradient norm; 0 = off
    warmup_epochs: Annotated[int, NON_NEGATIVE] = 0  # [choice] linear warm-up before cosine annealing
    # [choice, docs/method.md §9] steps of head warm-up before epoch 1: the first layer's heads alone, on
    # cached root views, with the head-MIL loss (magnet.training.warmup; needs model.head_mil). 0 = off.
    head_warmup_steps: Annotated[int, NON_NEGATIVE] = 0
    # slides per warm-up step (root views are 56 x 56: cheap)
    head_warmup_batch: Annotated[int, AtLeast(1)] = 16

    def __post_init__(self) -> None:
        check_domains(self)


@dataclass
class RefitConfig:
    """[choice, docs/method.md §9] After training, the classifier's readout fitted again on the best
    checkpoint's final-patch features, the zoom fixed (``magnet.training.readout_refit``). 0 epochs: off."""

    epochs: Annotated[int, NON_NEGATIVE] = 0  # passes over the cached training features, one slide a step
    lr: Annotated[float, POSITIVE] = 1e-4  # Adam
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-4
    # Whether the readout as trained (pass 0) may be kept. Off: training already chose that checkpoint on
    # the same validation slides, so its validation AUROC is biased upwards against the refit passes'.
    trained_competes: bool = False
    # [choice] > 1: the readout is the mean of this many refits, each choosing its pass on one fold of the
    # training and validation slides pooled (magnet.training.readout_refit.refit_readout_folds)
    folds: Annotated[int, AtLeast(1)] = 1
    # [choice] what the refitted readout scores (model.readout_instances); None keeps the trained model's.
    # "cells": training read whole patches, the refit and every prediction after it read each patch's cells.
    readout_instances: ReadoutInstances | None = None

    def __post_init__(self) -> None:
        check_domains(self)
        if self.folds > 1 and self.trained_competes:
            raise ConfigError(f"refit.folds={self.folds} with refit.trained_competes: the trained readout "
                              "was chosen on slides that every fold now fits on; use one or the other")


@dataclass
class TrainConfig:
    model: MagNetConfig = field(default_factory=MagNetConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    refit: RefitConfig = field(default_factory=RefitConfig)
    seed: Annotated[int, SEED] = 0  # seeds initialisation, shuffling, augmentation and sampler noise
    accelerator: str = "auto"  # Lightning Fabric: cpu, gpu, auto
    # Devices per node: a count (``--set devices=2``) or a Lightning string ("auto", "0,1"; "-1": all).
    devices: Annotated[int, AtLeast(1)] | str = 1
    num_nodes: Annotated[int, AtLeast(1)] = 1
    strategy: str = "auto"  # "ddp" for several GPUs or nodes
    precision: str = "32-true"  # "bf16-mixed" / "16-mixed" on GPU
    eval_every: Annotated[int, AtLeast(1)] = 1  # validate every N epochs

    def __post_init__(self) -> None:
        check_domains(self)
        if isinstance(self.devices, str):
            _check_devices_text(self.devices)
        wants_patch_logits = self.loss.head_value > 0 and self.loss.head_value_target != "novelty"
        if wants_patch_logits and self.model.readout == "gru":
            raise ConfigError(
                "loss.head_value > 0 needs a logit per final patch: set model.readout to max, lse or "
                "attention (the GRU gives one for the whole sequence), or loss.head_value_target=novelty"
            )
        if self.refit.readout_instances == "cells" and self.model.readout == "gru":
            raise ConfigError(
                "refit.readout_instances=cells scores each cell of a final patch with a per-patch head: set "
                "model.readout to max, lse or attention (got gru)"
            )


# What Lightning takes as text: "auto", "-1" (every device), a count ("2") or device indices ("0,1", "1,").
_DEVICES_TEXT = re.compile(r"auto|-1|[0-9]+|[0-9]+(,[0-9]+)*,?")
_DEVICES_ALLOWED = "an integer >= 1, 'auto', '-1' (every device) or device indices such as '0,1'"


def _check_devices_text(text: str) -> None:
    """Refuse a ``devices`` string Lightning would fail on with a traceback (``"0"``, ``"abc"``, ``""``)."""
    if not _DEVICES_TEXT.fullmatch(text.strip()) or (text.strip().isdigit() and int(text) < 1):
        raise DomainError("devices", text, _DEVICES_ALLOWED)
