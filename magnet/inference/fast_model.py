"""A MagNet prepared for inference: the same predictions, computed faster on a CPU or GPU.

``inference_copy(model)`` returns an evaluation-mode copy (the trained model is left as it was) whose
classifier CNN, the bulk of a forward pass (InceptionV3 on 18 patches for ``magnet3``), and the localisation
heads are rewritten:

- **Batch norm folded into the convolution before it, channels-last memory** for the classifier CNN
  (``magnet.models.constant_cnn.prepare_constant_cnn``); the heads get the folding only: their grouped
  convolutions ran slower channels-last on a CPU.
- ``precision="bf16"`` [choice, off by default]: the classifier CNN alone runs under bfloat16 autocast
  (heads, sampler and ROIs stay float32, so the boxes do not move); its features return as float32. Fast
  on GPUs and on CPUs with native bfloat16 (AVX512-BF16, AMX); slow elsewhere. Probabilities move by
  bfloat16's rounding (8 bits of mantissa), so it is a user's explicit choice, never the default.

The folding and channels-last preparation is ``magnet.models.constant_cnn``'s (a classifier trained with a
frozen CNN uses it too). Measured effect and the speed of ``magnet predict``: docs/BENCHMARKS.md
("Per-slide inference speed").
Outputs agree with the unprepared model to float rounding (tests/inference/test_fast_model.py). The
auxiliary classifiers are not prepared: inference leaves them out (``MagNet.forward(auxiliary=False)``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.models.backbones import CellMap
from magnet.models.constant_cnn import fold_batch_norms, prepare_constant_cnn
from magnet.models.magnet import MagNet
from magnet.models.magnifying import MagnifyingLayer

__all__ = ["PRECISIONS", "inference_copy"]

PRECISIONS = ("fp32", "bf16")


class _Bfloat16(nn.Module):
    """Runs ``network`` under bfloat16 autocast on its input's device; float32 out."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: Tensor) -> Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            out: Tensor = self.network(images)
        return out.float()


def inference_copy(model: MagNet, precision: str = "fp32") -> MagNet:
    """An evaluation-mode copy of ``model``: classifier CNN folded and channels-last, heads folded;
    ``precision="bf16"`` runs that CNN in bfloat16 (see above).

    For prediction only: the copy's networks are traced graphs that ``load_state_dict`` of a checkpoint
    does not fit, and their batch norms are gone, so it must not be trained.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
    fast = copy.deepcopy(model).eval()
    backbone = fast.classifier.backbone
    # Its spatial map (for the re-centring step, or as what a readout over cells reads), prepared before the
    # encoder becomes a graph.
    if model.config.recentre or model.classifier.reads_cells:
        cell_map = prepare_constant_cnn(CellMap(backbone).eval())
        fast.classifier.pin_cell_map(_Bfloat16(cell_map) if precision == "bf16" else cell_map)
    backbone.encoder = prepare_constant_cnn(backbone.encoder)
    # Prepared here once, so a classifier trained with its CNN frozen must not prepare its own copy again.
    fast.classifier.frozen = False
    if precision == "bf16":
        backbone.encoder = _Bfloat16(backbone.encoder)
    for layer in fast.layers:
        assert isinstance(layer, MagnifyingLayer)
        heads = layer.heads
        if len(heads.blocks):  # a layer whose children are all frozen has no head network
            heads.blocks = fold_batch_norms(heads.blocks)  # type: ignore[assignment]  # a graph, same calls
    return fast
