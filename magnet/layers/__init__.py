"""Building blocks of a magnifying layer (MagNet paper §3.1; docs/method.md §2-§3).

Sparsemax and its spatial form, theta from a probability map, bilinear and linearized multi-sampling,
Inception-style blocks and the grouped localisation heads. Tensors in, tensors out.
"""

from magnet.layers.heads import LocalisationHeads
from magnet.layers.inception import ConvBNReLU, InceptionBlock
from magnet.layers.samplers import SAMPLER_KINDS, Sampler, bilinear_sample, linearized_sample
from magnet.layers.sparsemax import Sparsemax, SparsemaxFunction, sparsemax, spatial_sparsemax
from magnet.layers.theta import peak_translation, pixel_centres, snap_translation, theta_from_probability

__all__ = [
    "ConvBNReLU",
    "InceptionBlock",
    "LocalisationHeads",
    "SAMPLER_KINDS",
    "Sampler",
    "Sparsemax",
    "SparsemaxFunction",
    "bilinear_sample",
    "linearized_sample",
    "peak_translation",
    "pixel_centres",
    "snap_translation",
    "sparsemax",
    "spatial_sparsemax",
    "theta_from_probability",
]
