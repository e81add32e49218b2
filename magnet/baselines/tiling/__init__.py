"""The tiling + attention-MIL baseline: what most whole-slide pipelines do, for MagNet to be compared with.

A tissue mask from a thumbnail and a grid of tiles (``tissue``), a frozen ImageNet encoder (``encoder``), the
tiles' features cached once per slide on disk (``features``), gated attention MIL trained on slide labels
(``mil``, ``train``), and the test scores with the attention's top tiles as the baseline's "where" (``run``).
``magnet.evaluation.tiling`` writes the same outputs as ``magnet evaluate``; ``magnet baseline tiling
RECIPE`` runs it all (``configs/baselines/tiling_camelyon.yaml``).
"""

from magnet.baselines.tiling.config import EncoderConfig, MILConfig, TileConfig, TilingConfig
from magnet.baselines.tiling.encoder import ENCODERS, TileEncoder, build_encoder
from magnet.baselines.tiling.features import SlideFeatures, load_features, save_features, slide_features
from magnet.baselines.tiling.mil import GatedAttentionMIL
from magnet.baselines.tiling.run import SlideScore, TilingResult, run_tiling
from magnet.baselines.tiling.tissue import tile_grid, tissue_mask
from magnet.baselines.tiling.train import fit_mil, score_bags

__all__ = [
    "ENCODERS", "EncoderConfig", "GatedAttentionMIL", "MILConfig", "SlideFeatures", "SlideScore",
    "TileConfig", "TileEncoder", "TilingConfig", "TilingResult", "build_encoder", "fit_mil", "load_features",
    "run_tiling", "save_features", "score_bags", "slide_features", "tile_grid", "tissue_mask",
]
