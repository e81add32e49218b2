"""An in-memory slide: a ``RegionSource`` over one image tensor, in canvas coordinates.

The image is the level-0 slide (``W x H``), centred on the black square canvas of side ``L = max(W, H)``
(docs/method.md §1, ``magnet.geometry``). ``read(rois, size)`` samples each ROI with ``affine_grid`` /
``grid_sample`` (``align_corners=False``, zeros outside the slide). To avoid aliasing when an ROI is much
coarser than the image (a whole-slide view of a textured image), it samples from an antialiased pyramid
built once: level k is the image resized by ``2^-k`` with a triangle (antialiased bilinear) filter, and each
ROI reads the coarsest level whose pixels are still no larger than its output pixels. That is what a
real slide reader does with a pyramid file (pick the level near the needed resolution, then resize).

It is the source the model tests use; real slides go through the lead's ``RegionReader`` (same protocol).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from magnet.geometry import canvas_side
from magnet.slides.pixels import grey_filter_tensor

__all__ = ["TensorRegionSource"]

# Stop the pyramid when the longer side would drop below this many pixels.
_MIN_LEVEL_SIDE = 4


class TensorRegionSource:
    """``RegionSource`` of an in-memory float image ``(3, H, W)`` in ``[0, 1]`` (the level-0 slide)."""

    def __init__(self, image: Tensor, grey_filter: bool = False) -> None:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"expected a float image in [0, 1], got dtype {image.dtype}")
        self.image = image.float()
        self.grey_filter = grey_filter
        height, width = image.shape[-2:]
        self._size = (int(width), int(height))
        self._levels = self._build_pyramid(self.image)

    @property
    def slide_size(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self._size

    @property
    def num_levels(self) -> int:
        return len(self._levels)

    @staticmethod
    def _build_pyramid(image: Tensor) -> list[Tensor]:
        # Every level covers the same extent, so normalised coordinates are the same at every level.
        levels = [image.unsqueeze(0)]
        while max(levels[-1].shape[-2:]) // 2 >= _MIN_LEVEL_SIDE:
            h, w = levels[-1].shape[-2:]
            smaller = F.interpolate(
                levels[-1],
                size=(max(1, h // 2), max(1, w // 2)),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            levels.append(smaller)
        return levels

    def level_for(self, rois: Tensor, size: int) -> Tensor:
        """Pyramid level (long tensor ``(N,)``) each ROI reads from at output ``size``."""
        # Level-0 pixels per output pixel: the ROI spans 2 * half canvas units = half * L pixels.
        half = rois[:, :2, :2].abs().sum(-1).amax(-1)
        pixels_per_output = half.double() * canvas_side(self._size) / size
        level = torch.floor(torch.log2(pixels_per_output.clamp(min=1.0)))
        return level.clamp(0, self.num_levels - 1).long()

    @torch.no_grad()
    def read(self, rois: Tensor, size: int) -> Tensor:
        """Pixels of canvas ROIs ``(N, 3, 3)`` as float32 ``(N, 3, size, size)`` in ``[0, 1]``."""
        if rois.dim() != 3 or rois.shape[-2:] != (3, 3):
            raise ValueError(f"expected ROIs of shape (N, 3, 3), got {tuple(rois.shape)}")
        device = self.image.device
        rois = rois.detach().to(device=device, dtype=torch.float32)
        count = rois.shape[0]
        width, height = self._size
        side = float(canvas_side(self._size))
        # Canvas coordinates -> the image's own normalised coordinates: u_img = u * L / W (x), u * L / H (y).
        to_image = torch.tensor([[side / width], [side / height]], device=device)
        affine = to_image * rois[:, :2, :]
        grids = F.affine_grid(affine, [count, 3, size, size], align_corners=False)
        out = torch.zeros(count, 3, size, size, device=device)
        levels = self.level_for(rois, size)
        for level in torch.unique(levels).tolist():
            index = (levels == level).nonzero().squeeze(1)
            # One grid_sample per level: the ROIs' grids stacked along the height axis of one batch item.
            grid = grids[index].reshape(1, -1, size, 2)
            sampled = F.grid_sample(
                self._levels[int(level)], grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out[index] = sampled.reshape(3, -1, size, size).transpose(0, 1)
        out = out.clamp_(0.0, 1.0)
        return grey_filter_tensor(out) if self.grey_filter else out

    def __repr__(self) -> str:
        width, height = self._size
        return (
            f"TensorRegionSource({width}x{height}, levels={self.num_levels}, grey_filter={self.grey_filter})"
        )
