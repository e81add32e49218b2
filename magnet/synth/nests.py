"""Nested growth (version 4): a cue between the scales of a thumbnail and of cells.

On versions 2 and 3 a lesion and its look-alikes have the same mean colour and differ only in their cells, so
nothing between a thumbnail (30-70 um/px) and cells (<= 4 um/px) tells them apart, and a zoom can do no better
than visit every pale spot. Real metastases often grow in cohesive nests parted by thin fibrous septa, a
pattern seen at low-to-medium power; reactive germinal centres can look mottled at that power too (the
"starry sky" of their pale tingible-body macrophages). Version 4 draws that: some lesions and fewer
look-alikes carry a fine, zero-mean colour pattern (``NEST_UM`` wavelength) toward the fibrous colour of the
capsule. Its pixels average it out at a thumbnail's scale, it shows at 8-16 um/px, and since it is neither
on every lesion nor only on lesions, it says where to look first, not what the slide is: cells still decide
(docs/virtual-slides.md, "Version 4", has the resolution curve).

The pattern is three plane waves 120 degrees apart (a hexagonal lattice of nests), orientation and phases per
slide. Each pixel gets the exact mean of the pattern over its square (a plane wave's box average is the wave
times ``sinc`` of each axis), so a coarse level is still the area average of level 0 and the pattern fades
with the pixel size as a scanner's optics would average it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magnet.synth.shapes import StarShape

# Wavelength of the nests (um): 2.5 px at 16 um/px; at 32 um/px and coarser a pixel averages it out (to
# under 0.3 of its level-0 swing; a scanner's optics would too).
NEST_UM = 40.0
# Colour change at a crest (0-255 RGB units), along the unit direction from the carcinoma's mean colour to
# the capsule's: septa of collagen between nests.
NEST_CONTRAST = 40.0
# Share of lesions, and of look-alikes, drawn with the pattern: a weak cue (a perfect detector of the pattern
# tells a lesion from a look-alike with AUROC about 0.5 + (0.7 - 0.25) / 2 = 0.72).
MOTTLED_LESIONS = 0.7
MOTTLED_LOOKALIKES = 0.25
_STREAM = 40  # random streams of version 4 (anatomy.py's are 20-27)


@dataclass(frozen=True)
class NestPattern:
    """The slide's nest lattice: ``waves`` ``(3, 2)`` in radians per level-0 px, ``phases`` ``(3,)``."""

    waves: np.ndarray
    phases: np.ndarray

    @classmethod
    def for_slide(cls, seed: int, mpp: float) -> NestPattern:
        rng = np.random.default_rng([seed, _STREAM, 0])
        k = 2 * np.pi * mpp / NEST_UM
        angles = rng.uniform(0, 2 * np.pi / 3) + np.arange(3) * 2 * np.pi / 3
        waves = k * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return cls(waves, rng.uniform(0, 2 * np.pi, 3))

    def field(self, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray:
        """``(len(ys), len(xs))`` float32: the pattern's mean over each pixel's ``d``-wide square centred at
        ``(xs, ys)`` (level-0 px); in ``[-0.5, 1]`` at level 0, zero mean."""
        out = np.zeros((len(ys), len(xs)), np.float64)
        for (kx, ky), phase in zip(self.waves, self.phases, strict=True):
            # the box mean of cos(kx x + ky y + phase) is the wave times sin(u)/u per axis, u = k d / 2
            # (np.sinc(t) is sin(pi t)/(pi t)); the wave is split into an outer product of a column and a row
            gain = np.sinc(kx * d / (2 * np.pi)) * np.sinc(ky * d / (2 * np.pi))
            ax, ay = kx * xs + phase, ky * ys
            out += gain * (np.outer(np.cos(ay), np.cos(ax)) - np.outer(np.sin(ay), np.sin(ax)))
        return (out / 3).astype(np.float32)


def mottled_shapes(seed: int, lesions: list[StarShape], lookalikes: list[StarShape]) -> list[StarShape]:
    """The lesions and look-alikes drawn with the pattern. Each list has its own random stream, one draw per
    shape in order, so a small-lesion slide and its negative twin (version 3: the same look-alikes) mottle
    the same look-alikes."""
    lesion_draws = np.random.default_rng([seed, _STREAM, 1]).random(len(lesions))
    lookalike_draws = np.random.default_rng([seed, _STREAM, 2]).random(len(lookalikes))
    return [s for s, u in zip(lesions, lesion_draws, strict=True) if u < MOTTLED_LESIONS] + [
        s for s, u in zip(lookalikes, lookalike_draws, strict=True) if u < MOTTLED_LOOKALIKES
    ]
