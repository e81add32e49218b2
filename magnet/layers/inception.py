"""Inception-style multi-kernel block for the localisation heads of a magnifying layer.

MagNet (paper §3.1, "Convolutional layers") stacks convolutions "with different kernel sizes similarly to
InceptionNet-v3" because salient structures vary in size; the block's exact layout is in the paper's
unavailable appendix, so docs/method.md §2.1 fixes one [choice]: four branches concatenated,
1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | 1x1 -> 1x7 -> 7x1, each convolution followed by BatchNorm and ReLU,
stride 1 and 'same' padding so the 56 x 56 map keeps its size. The branch shapes follow Szegedy et al.,
"Going deeper with convolutions" (CVPR 2015) and "Rethinking the Inception Architecture for Computer
Vision" (CVPR 2016: factorised 3x3 pairs and 1x7 / 7x1 kernels).

``groups=G`` runs G independent blocks (one per localisation head, docs/method.md §2.1: "all heads of a layer
can run as one grouped convolution") as grouped convolutions. Channels are group-major on input and
output (the channels of group g are contiguous), so blocks stack and group g only ever sees group g.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from magnet.errors import ConfigError

__all__ = ["ConvBNReLU", "InceptionBlock"]


class ConvBNReLU(nn.Sequential):
    """Grouped convolution (stride 1, 'same' padding, no bias: BN follows) + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], groups: int) -> None:
        padding = (kernel[0] // 2, kernel[1] // 2)  # odd kernels: 'same' size at stride 1
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),  # per channel, so groups stay independent
            nn.ReLU(inplace=True),
        )


class InceptionBlock(nn.Module):
    """Four-branch Inception block; ``groups`` independent copies, group-major channels in and out.

    Input ``(N, groups * in_channels, H, W)``; output ``(N, groups * 4 * branch_channels, H, W)``
    (``out_channels``), the four branches of group g in channels ``[g * 4 * branch_channels, ...)``.
    """

    def __init__(self, in_channels: int, branch_channels: int, groups: int = 1) -> None:
        super().__init__()
        if in_channels < 1 or branch_channels < 1 or groups < 1:
            raise ConfigError(
                f"InceptionBlock(in_channels={in_channels}, branch_channels={branch_channels}, "
                f"groups={groups}): all must be >= 1"
            )
        self.in_channels = in_channels
        self.branch_channels = branch_channels
        self.groups = groups
        self.out_channels = groups * 4 * branch_channels
        g, c_in, c = groups, groups * in_channels, groups * branch_channels
        self.branch_1x1 = ConvBNReLU(c_in, c, (1, 1), g)
        self.branch_3x3 = nn.Sequential(ConvBNReLU(c_in, c, (1, 1), g), ConvBNReLU(c, c, (3, 3), g))
        self.branch_double_3x3 = nn.Sequential(
            ConvBNReLU(c_in, c, (1, 1), g), ConvBNReLU(c, c, (3, 3), g), ConvBNReLU(c, c, (3, 3), g)
        )
        self.branch_7x7 = nn.Sequential(
            ConvBNReLU(c_in, c, (1, 1), g), ConvBNReLU(c, c, (1, 7), g), ConvBNReLU(c, c, (7, 1), g)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch_1x1(x), self.branch_3x3(x), self.branch_double_3x3(x), self.branch_7x7(x)]
        # Each branch is group-major (G, branch_channels); interleave to (G, 4, branch_channels).
        n, _, height, width = x.shape
        stacked = torch.stack(branches, dim=1)  # (N, 4, G * bc, H, W)
        stacked = stacked.view(n, 4, self.groups, self.branch_channels, height, width).transpose(1, 2)
        return stacked.reshape(n, self.out_channels, height, width)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, branch_channels={self.branch_channels}, groups={self.groups}, "
            f"out_channels={self.out_channels}"
        )
