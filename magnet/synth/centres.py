"""Centres: named stain-and-scanner profiles that change how a virtual slide looks (docs/virtual-slides.md).

A slide scanned at another hospital differs in its stain (the haematoxylin and eosin dyes, their lots and
staining times) and its scanner (optics, compression, sensor). A ``Centre`` models both, as a pure map from
the pixels a virtual slide renders to that centre's pixels:

1. **Stain** (colour deconvolution, Ruifrok & Johnston 2001, Anal. Quant. Cytol. Histol. 23(4)). Optical
   density ``OD = -ln((I + 1) / 256)`` per channel (Beer-Lambert; +1 keeps black finite). The OD is unmixed
   into haematoxylin, eosin and a residual with the *reference* stain matrix (the H and E directions of
   ``magnet.synth.stain``, the residual their normalised cross product, as Ruifrok & Johnston complete a
   two-stain matrix), each stain's concentration is scaled by the slide's draw from the centre's range, and
   the concentrations are re-mixed with the *centre's* stain directions: ``OD' = (OD M_ref^-1 diag(s)) M_c``.
2. **Scanner**: a Gaussian point-spread function of ``psf_um`` micrometres (sigma), so in pixels
   ``psf_um / (mpp * downsample)``: it blurs fine reads and vanishes at coarse ones; a brightness gain;
   sensor noise of ``noise`` grey levels at level 0, averaging down as ``1 / downsample``; JPEG at
   ``jpeg_quality`` (every level of a scanner's pyramid is stored JPEG-compressed).

Deterministic: the concentration scales are drawn from the slide seed, the noise from the slide seed and the
region (``location``, ``downsample``, size), so the same region always renders the same. The stain step is
per pixel and nearly linear in the light a pixel lets through over the small shifts of a centre, so a coarse
read is close to the downsampled fine read (tests/synth/test_centres.py measures it).

The profiles below have neutral names and are our own: they span stain shifts of the size seen between
Camelyon17's five centres (Bandi et al. 2019, IEEE TMI 38(2), Fig. 2), and model no particular hospital.
``reference`` is the identity: a slide of that centre renders bit-for-bit as a slide without a centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magnet.slides.colour import jpeg_roundtrip, od_to_rgb, rgb_to_od
from magnet.synth.stain import E_OD, H_OD


def _unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def stain_matrix(h_od: np.ndarray, e_od: np.ndarray) -> np.ndarray:
    """Rows H, E, residual (unit OD directions); the residual completes the basis (Ruifrok & Johnston)."""
    h, e = _unit(h_od), _unit(e_od)
    return np.stack([h, e, _unit(np.cross(h, e))])


REFERENCE_MATRIX = stain_matrix(H_OD, E_OD)


@dataclass(frozen=True)
class Centre:
    """A stain-and-scanner profile; every default is the identity."""

    name: str
    h_od: tuple[float, float, float] = (float(H_OD[0]), float(H_OD[1]), float(H_OD[2]))
    e_od: tuple[float, float, float] = (float(E_OD[0]), float(E_OD[1]), float(E_OD[2]))
    h_scale: tuple[float, float] = (1.0, 1.0)  # range of the haematoxylin concentration factor per slide
    e_scale: tuple[float, float] = (1.0, 1.0)  # range of the eosin concentration factor per slide
    psf_um: float = 0.0  # Gaussian point-spread sigma in micrometres (0: sharp)
    jpeg_quality: int | None = None  # None: no compression
    brightness: float = 1.0  # light-source gain on transmitted light
    noise: float = 0.0  # grey levels of sensor noise at level 0

    @property
    def is_identity(self) -> bool:
        return self == Centre(self.name)

    def stain_for(self, slide_seed: int) -> np.ndarray:
        """The ``(3, 3)`` OD map of one slide: ``M_ref^-1 diag(h, e, 1) M_centre`` (row vectors)."""
        rng = np.random.default_rng([slide_seed, 0xCE27])
        scales = np.array([rng.uniform(*self.h_scale), rng.uniform(*self.e_scale), 1.0])
        target = stain_matrix(np.asarray(self.h_od), np.asarray(self.e_od))
        return np.linalg.inv(REFERENCE_MATRIX) @ np.diag(scales) @ target  # type: ignore[no-any-return]

    def blur_sigma_px(self, mpp: float, downsample: float) -> float:
        return self.psf_um / (mpp * downsample)

    def margin_px(self, mpp: float, downsample: float) -> int:
        """Pixels to render around a region so that the blur at its edge sees real neighbours."""
        sigma = self.blur_sigma_px(mpp, downsample)
        return int(np.ceil(3.0 * sigma)) if sigma >= 0.05 else 0


def apply_centre(
    rgb: np.ndarray,
    centre: Centre,
    *,
    slide_seed: int,
    mpp: float,
    downsample: float,
    location: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """``rgb`` (uint8 ``(H, W, 3)``, as the virtual slide rendered it) in ``centre``'s look (uint8).

    ``location`` (level-0 top-left) and ``downsample`` seed the sensor noise, so a region renders the same
    every time. The identity centre returns ``rgb`` itself.
    """
    if centre.is_identity:
        return rgb
    od = rgb_to_od(rgb) @ centre.stain_for(slide_seed)
    out = od_to_rgb(od) * centre.brightness
    sigma = centre.blur_sigma_px(mpp, downsample)
    if sigma >= 0.05:
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(out, sigma=(sigma, sigma, 0.0), mode="nearest")
    if centre.noise > 0:
        # A seed sequence takes non-negative integers only: a region starting left of or above the slide
        # wraps to 2**64 + x, beyond any location on a slide, so every other region keeps its noise.
        x, y = (int(round(v)) % 2**64 for v in location)
        key = [slide_seed, x, y, int(round(downsample * 1024)), rgb.shape[0], rgb.shape[1], 0x5E75]
        out = out + np.random.default_rng(key).normal(0.0, centre.noise / downsample, out.shape)
    pixels = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if centre.jpeg_quality is not None:
        pixels = jpeg_roundtrip(pixels, centre.jpeg_quality)
    return pixels


CENTRES: dict[str, Centre] = {
    c.name: c
    for c in (
        Centre("reference"),
        # More haematoxylin, a bluer eosin: the "more purple" look of a stronger haematoxylin bath.
        Centre("purple", h_od=(0.55, 0.76, 0.35), e_od=(0.26, 0.83, 0.50), h_scale=(1.25, 1.5),
               e_scale=(0.8, 0.95), jpeg_quality=85),
        # Under-stained and brighter: short staining times, a bright light source.
        Centre("pale", h_scale=(0.55, 0.7), e_scale=(0.6, 0.75), brightness=1.03, noise=1.5),
        # Over-stained, a redder eosin, a dimmer scanner, stronger compression.
        Centre("dark", e_od=(0.16, 0.84, 0.52), h_scale=(1.3, 1.5), e_scale=(1.3, 1.5), brightness=0.93,
               jpeg_quality=70),
        # A soft scanner: 0.5 um point spread, sensor noise, strong compression; stain near the reference.
        Centre("blurry", h_od=(0.64, 0.70, 0.33), h_scale=(0.9, 1.1), e_scale=(0.9, 1.1), psf_um=0.5,
               jpeg_quality=60, noise=3.0),
    )
}
DEFAULT_CENTRE = "reference"


def centre_named(name: str) -> Centre:
    """The centre called ``name``; ``KeyError`` with the known names otherwise (callers say where)."""
    try:
        return CENTRES[name]
    except KeyError:
        raise KeyError(f"unknown centre {name!r} (known: {', '.join(CENTRES)})") from None
