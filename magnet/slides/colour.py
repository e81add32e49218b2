"""Colour maps on what a ``RegionSource`` returns: stain augmentation and stain normalisation.

Both wrap a slide's region source, so the model never changes and every read of a slide (the root view,
every layer's regions, the final patches) goes through the same map:

- ``JitteredSource``: one slide's draw of ``ColourJitter`` applied to every read. The colour part is a map of
  each pixel alone, so a pixel gets the same colour in a coarse and a fine read:
  stain augmentation in HED space (Tellez et al. 2018, "Whole-slide mitosis detection in H&E breast
  histology using PHH3 as a reference to train distilled stain-invariant convolutional networks", IEEE TMI
  37(9); Tellez et al. 2019, "Quantifying the effects of data augmentation and stain color normalization in
  convolutional neural networks for computational pathology", Med. Image Anal. 58): optical density
  ``OD = -ln((255 x + 1) / 256)`` is unmixed into haematoxylin, eosin and DAB (residual) concentrations
  with Ruifrok & Johnston's matrix (Anal. Quant. Cytol. Histol. 23(4), 2001, the H&E-DAB vectors), each
  concentration ``c`` becomes ``alpha c + beta`` with ``alpha ~ U(1 - s, 1 + s)``, ``beta ~ U(-b, b)`` per
  channel, and is re-mixed; then brightness (a gain), contrast (about mid-grey, so that it stays a per-pixel
  map) and saturation (about each pixel's luma, ITU-R BT.601 weights). Optional blur (a Gaussian of
  ``blur_px`` output pixels) and JPEG (``jpeg_quality``) act on each read as a scanner would.
- ``ReinhardSource``: stain normalisation (Reinhard et al. 2001, "Color transfer between images", IEEE
  CG&A 21(5)): in the ``lαβ`` space of Ruderman et al. 1998, each channel's mean and standard deviation
  over the slide's tissue pixels (measured once per slide on its whole-slide view) are moved to a target's.

Black pixels (outside the slide, or removed by the grey filter, paper §4.2) stay black: they carry no stain.
Values stay in ``[0, 1]``. Reads are not differentiable, and neither are these maps (``torch.no_grad``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image

__all__ = [
    "HED_FROM_RGB_OD",
    "STAIN_NORMS",
    "StainNorm",
    "ColourJitter",
    "JitteredSource",
    "ReinhardSource",
    "ReinhardTarget",
    "jitter_images",
    "jpeg_roundtrip",
    "lab_stats",
    "od_to_rgb",
    "rgb_to_od",
]

# Ruifrok & Johnston (2001): unit OD vectors of haematoxylin, eosin and DAB (rows).
RGB_OD_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64
)
RGB_OD_FROM_HED = RGB_OD_FROM_HED / RGB_OD_FROM_HED.norm(dim=1, keepdim=True)
HED_FROM_RGB_OD = torch.linalg.inv(RGB_OD_FROM_HED)
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601


@dataclass(frozen=True)
class ColourJitter:
    """One slide's colour draw; the defaults are the identity."""

    hed_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # alpha per H, E, D concentration
    hed_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # beta per H, E, D concentration
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    blur_px: float = 0.0  # Gaussian sigma in output pixels; 0: none
    jpeg_quality: int = 0  # 1..100; 0: none

    @property
    def is_identity(self) -> bool:
        return self == ColourJitter()


def rgb_to_od(rgb: np.ndarray) -> np.ndarray:
    """Optical density of 0–255 RGB: ``-ln((I + 1) / 256)``, 0 for white, ~5.5 for black (the +1 keeps
    black finite). ``_od`` is the same transform on float images in [0, 1]."""
    return -np.log((np.asarray(rgb, dtype=np.float64) + 1.0) / 256.0)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_od`` (float, not clipped)."""
    return 256.0 * np.exp(-od) - 1.0


def _od(x: torch.Tensor) -> torch.Tensor:
    return -torch.log((x.double() * 255.0 + 1.0) / 256.0)  # rgb_to_od of x * 255


def _from_od(od: torch.Tensor) -> torch.Tensor:
    return ((256.0 * torch.exp(-od) - 1.0) / 255.0).float()  # od_to_rgb / 255


def jitter_images(images: torch.Tensor, jitter: ColourJitter) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` in ``[0, 1]`` under one draw (a new tensor; the input is not changed)."""
    if jitter.is_identity:
        return images.clone()
    with torch.no_grad():
        black = images.amax(dim=1, keepdim=True) <= 0
        x = images
        if jitter.hed_scale != (1.0, 1.0, 1.0) or jitter.hed_shift != (0.0, 0.0, 0.0):
            c = torch.einsum("nchw,cd->ndhw", _od(x), HED_FROM_RGB_OD)
            alpha = torch.tensor(jitter.hed_scale, dtype=torch.float64).view(1, 3, 1, 1)
            beta = torch.tensor(jitter.hed_shift, dtype=torch.float64).view(1, 3, 1, 1)
            x = _from_od(torch.einsum("ndhw,dc->nchw", c * alpha + beta, RGB_OD_FROM_HED))
        x = x * jitter.brightness
        x = (x - 0.5) * jitter.contrast + 0.5
        if jitter.saturation != 1.0:
            luma = torch.einsum("nchw,c->nhw", x, _LUMA.to(x)).unsqueeze(1)
            x = luma + (x - luma) * jitter.saturation
        x = x.clamp(0.0, 1.0)
        if jitter.blur_px > 0:
            x = _gaussian_blur(x, jitter.blur_px)
        if jitter.jpeg_quality > 0:
            x = _jpeg(x, jitter.jpeg_quality)
        return x.masked_fill(black, 0.0).contiguous()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = torch.nn.functional.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = torch.nn.functional.conv2d(flat, kernel.view(1, 1, 1, -1))
    flat = torch.nn.functional.conv2d(flat, kernel.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` compressed as JPEG at ``quality`` and decoded again, as a scanner stores it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    pixels = (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    decoded = np.stack([jpeg_roundtrip(image, quality) for image in pixels])
    return torch.from_numpy(decoded).permute(0, 3, 1, 2).float() / 255.0


class _Wrapped:
    """A region source whose reads pass through a map; every other attribute is the wrapped source's."""

    def __init__(self, source: Any) -> None:
        self.source = source

    @property
    def slide_size(self) -> tuple[int, int]:
        return tuple(self.source.slide_size)  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)


class JitteredSource(_Wrapped):
    """``source`` with one ``ColourJitter`` draw applied to every read (the ``RegionSource`` protocol)."""

    def __init__(self, source: Any, jitter: ColourJitter) -> None:
        super().__init__(source)
        self.jitter = jitter

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        return jitter_images(self.source.read(rois, size), self.jitter)


# --- Reinhard normalisation --------------------------------------------------------------------------------

# RGB -> LMS (Reinhard et al. 2001, eq. 4) and log-LMS -> l alpha beta (eq. 6).
_RGB_TO_LMS = torch.tensor(
    [[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]], dtype=torch.float64
)
_LMS_TO_LAB = torch.diag(torch.tensor([3**-0.5, 6**-0.5, 2**-0.5], dtype=torch.float64)) @ torch.tensor(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]], dtype=torch.float64
)
_LAB_TO_LMS = torch.linalg.inv(_LMS_TO_LAB)
_LMS_TO_RGB = torch.linalg.inv(_RGB_TO_LMS)
_EPS = 1.0 / 255.0  # keeps log finite for a zero channel


def _to_lab(x: torch.Tensor) -> torch.Tensor:
    lms = torch.einsum("nchw,dc->ndhw", x.double().clamp_min(_EPS), _RGB_TO_LMS)
    return torch.einsum("nchw,dc->ndhw", torch.log10(lms.clamp_min(_EPS)), _LMS_TO_LAB)


def _from_lab(lab: torch.Tensor) -> torch.Tensor:
    lms = 10 ** torch.einsum("nchw,dc->ndhw", lab, _LAB_TO_LMS)
    return torch.einsum("nchw,dc->ndhw", lms, _LMS_TO_RGB).float()


@dataclass(frozen=True)
class ReinhardTarget:
    """Mean and standard deviation per ``l alpha beta`` channel of tissue pixels."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def lab_stats(images: torch.Tensor) -> ReinhardTarget:
    """``ReinhardTarget`` of the non-black pixels of ``images`` ``(N, 3, H, W)`` (all pixels if none are)."""
    lab = _to_lab(images).permute(1, 0, 2, 3).reshape(3, -1)
    tissue = images.amax(dim=1).reshape(-1) > 0
    if tissue.sum() >= 2:
        lab = lab[:, tissue]
    mean, std = lab.mean(dim=1), lab.std(dim=1).clamp_min(1e-6)
    return ReinhardTarget(tuple(mean.tolist()), tuple(std.tolist()))  # type: ignore[arg-type]


def reinhard(images: torch.Tensor, source: ReinhardTarget, target: ReinhardTarget) -> torch.Tensor:
    """Move ``images`` from ``source``'s statistics to ``target``'s (black pixels stay black)."""
    with torch.no_grad():
        black = images.amax(dim=1, keepdim=True) <= 0
        lab = _to_lab(images)
        m_s, s_s = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (source.mean, source.std))
        m_t, s_t = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (target.mean, target.std))
        out = _from_lab((lab - m_s) / s_s * s_t + m_t).clamp(0.0, 1.0)
        return out.masked_fill(black, 0.0).contiguous()


# The whole-slide view the slide's statistics are measured on: the root ROI (the identity) at this size.
STATS_VIEW = 128


class ReinhardSource(_Wrapped):
    """``source`` with every read normalised to ``target`` (Reinhard et al. 2001), the slide's own statistics
    measured once on its whole-slide view."""

    def __init__(self, source: Any, target: ReinhardTarget) -> None:
        super().__init__(source)
        self.target = target
        self._stats: ReinhardTarget | None = None

    def stats(self) -> ReinhardTarget:
        if self._stats is None:
            view = self.source.read(torch.eye(3, dtype=torch.float32).unsqueeze(0), STATS_VIEW)
            self._stats = lab_stats(view)
        return self._stats

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        return reinhard(self.source.read(rois, size), self.stats(), self.target)


# The target of ``stain_norm: reinhard``: the mean per-slide statistics of 8 reference-centre virtual slides
# (``make_dataset(8, 0, texture="camelyon16")``, whole-slide views of 128 px, tissue pixels). Any fixed target
# serves, as long as training and inference share it (both go through the same normaliser).
REINHARD_TARGET = ReinhardTarget((-0.352, -0.0202, 0.0157), (0.056, 0.0061, 0.0045))


#: The ``stain_norm`` settings (recipe key, ``--stain-norm``): "none", or "reinhard" (Reinhard et al. 2001).
StainNorm = Literal["none", "reinhard"]
STAIN_NORMS: tuple[str, ...] = get_args(StainNorm)


def normaliser(name: str) -> Callable[[Any], Any] | None:
    """The source wrapper of a ``stain_norm`` setting: None for ``"none"``."""
    if name == "none":
        return None
    if name == "reinhard":
        return lambda source: ReinhardSource(source, REINHARD_TARGET)
    raise ValueError(f"unknown stain normalisation {name!r} (known: {', '.join(STAIN_NORMS)})")
