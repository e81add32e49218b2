"""The tiling baseline's recipe (``configs/baselines/tiling_camelyon.yaml``): tiles, encoder, MIL, outputs.

Every number has its domain beside it (``magnet.domains``), checked when the recipe loads, and every default
its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from magnet.domains import FRACTION, NON_NEGATIVE, POSITIVE, SEED, AtLeast, Interval, check_domains

__all__ = ["EncoderConfig", "MILConfig", "TileConfig", "TilingConfig"]


@dataclass(frozen=True)
class TileConfig:
    """Where tiles are laid and how they are read."""

    #: Tile side in output pixels. 256 px at 0.5 um/px (20x) is CLAM's and TRIDENT's default.
    size: Annotated[int, AtLeast(8)] = 256
    #: Microns per tile pixel: 0.5 is 20x; any value works (the level nearest it is read and resized).
    um_per_px: Annotated[float, POSITIVE] = 0.5
    #: Level-0 microns per pixel for slides whose file does not say (None: such a slide is refused).
    mpp: Annotated[float, POSITIVE] | None = None
    #: Thumbnail side (longer side, pixels) the tissue mask is computed on; ~25 um per mask pixel on a
    #: 100k-px slide, several mask pixels per 128-um tile.
    mask_px: Annotated[int, AtLeast(16)] = 1024
    #: Least share of a tile that must be tissue for it to be kept.
    min_tissue: Annotated[float, FRACTION] = 0.25
    #: Floor under Otsu's saturation threshold (an all-glass slide would otherwise split its noise).
    min_saturation: Annotated[float, FRACTION] = 0.05
    #: Tissue pieces smaller than this (mm²) are specks and dropped; holes below ``max_hole_mm2`` are filled.
    min_region_mm2: Annotated[float, NON_NEGATIVE] = 0.05
    max_hole_mm2: Annotated[float, NON_NEGATIVE] = 0.02

    def __post_init__(self) -> None:
        check_domains(self)


@dataclass(frozen=True)
class EncoderConfig:
    """The frozen tile encoder (``magnet.baselines.tiling.encoder``)."""

    #: ``efficientnet_lite0`` (ImageNet weights from the ``tiling`` extra) or ``small_random`` (tests, CPU).
    name: Literal["efficientnet_lite0", "small_random"] = "efficientnet_lite0"
    #: Tiles per forward pass (memory: 64 x 3 x 256² floats is 50 MB).
    batch_size: Annotated[int, AtLeast(1)] = 64
    #: Torch device for the encoder, e.g. ``cpu`` or ``cuda``.
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_domains(self)


@dataclass(frozen=True)
class MILConfig:
    """Gated attention MIL and its training (CLAM's defaults where it has one)."""

    hidden: Annotated[int, AtLeast(1)] = 128
    attention: Annotated[int, AtLeast(1)] = 64
    dropout: Annotated[float, Interval(0, 1, open_high=True)] = 0.25
    #: Fixed epoch budget; the epoch with the best validation AUROC is kept.
    epochs: Annotated[int, AtLeast(1)] = 20
    lr: Annotated[float, POSITIVE] = 2e-4  # CLAM's Adam step size
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-5  # CLAM's
    seed: Annotated[int, SEED] = 0
    #: Weight ``w`` of CLAM-SB's instance clustering loss (``magnet.baselines.tiling.clustering``): the
    #: slide's loss is ``(1 - w) * bag + w * instance``. 0 (default): plain attention MIL; CLAM uses 0.3.
    instance_weight: Annotated[float, Interval(0, 1, open_high=True)] = 0.0
    #: Tiles per slide taken as attention's top and as its bottom for the clustering loss (CLAM's B = 8).
    instance_k: Annotated[int, AtLeast(1)] = 8

    def __post_init__(self) -> None:
        check_domains(self)


@dataclass(frozen=True)
class TilingConfig:
    """The whole recipe."""

    #: Manifest CSV (``slide,label[,lesion_class,split,...]``): train, validation and test splits.
    manifest: str = ""
    #: Folder of the per-slide feature files, reused across runs (empty: ``OUT/features``).
    cache_dir: str = ""
    #: Most-attended tiles per slide exported and scored for localisation (the hit rate).
    top_k: Annotated[int, AtLeast(1)] = 8
    #: Bootstrap replicates of the AUROC intervals (0: none).
    n_bootstrap: Annotated[int, NON_NEGATIVE] = 1000
    tiles: TileConfig = field(default_factory=TileConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mil: MILConfig = field(default_factory=MILConfig)

    def __post_init__(self) -> None:
        check_domains(self)
