"""Colours of the version-2 node compartments, and the colour match of look-alikes to carcinoma.

Every compartment is one texture bank in one linear colour map (stain.py: ``base + channels @ matrix``), so
area-averaging still commutes with colouring. Look-alikes (``germinal``, ``histiocyte``, ``large_cells``)
get the colour map of their own bank with the base shifted so that the bank's mean colour equals the
carcinoma's mean colour on the same slide: a constant shift, so a look-alike and a lesion have the same
colour at any scale where cells are not resolved, and the cells (the texture) are the only difference.

Procedural mode draws each compartment from its own cell bank (cells.py). With ``texture=camelyon16`` the
lymphoid compartments and the look-alikes are the real *normal* patches (lesions the real tumour patches)
under affine maps of the slide's colour, and fat and vessels stay procedural (the shipped patches hold none).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from magnet.synth.stain import ClassColour, SlideColours, Stain, draw_stain, material_colour, slide_colours
from magnet.synth.textures import TextureBank

# Compartment -> (bank, (haematoxylin, eosin) of its background, nucleus scale) in procedural mode.
PROCEDURAL = {
    "paracortex": ("normal", (0.12, 0.36), 1.0),
    "mantle": ("normal", (0.17, 0.38), 1.2),  # the densest, darkest lymphocytes
    "germinal": ("germinal", (0.10, 0.32), 1.0),
    "medulla": ("medulla", (0.10, 0.45), 1.0),
    "sinus": ("histiocyte", (0.05, 0.28), 0.8),
    "histiocyte": ("histiocyte", (0.08, 0.35), 1.0),
    "large_cells": ("large_cells", (0.10, 0.36), 1.0),
    "fat": ("fat", (0.03, 0.25), 1.0),
    "vessel": ("medulla", (0.08, 1.1), 0.6),  # blood: red cells in a vessel wall
    "tumour": ("tumour", (0.14, 0.48), 1.0),
}
# With real patches: compartment -> (bank, lightening of the slide's normal colour; > 1 darkens).
REAL = {
    "paracortex": ("normal", 1.0),
    "mantle": ("normal", 1.25),
    "germinal": ("normal", 1.0),
    "medulla": ("normal", 0.85),
    "sinus": ("normal", 0.7),
    "histiocyte": ("normal", 1.0),
    "large_cells": ("normal", 1.0),
    "tumour": ("tumour", 1.0),
}
MATCHED = ("germinal", "histiocyte", "large_cells")  # coloured to the carcinoma's mean
BANKS = ("normal", "tumour", "germinal", "histiocyte", "large_cells", "medulla", "fat")


def bank_of(texture: str) -> dict[str, str]:
    """Which bank each compartment is drawn from."""
    banks = {name: bank for name, (bank, _, _) in PROCEDURAL.items()}
    if texture == "camelyon16":
        banks.update({name: bank for name, (bank, _) in REAL.items()})
    return banks


def mean_colour(colour: ClassColour, bank: TextureBank) -> np.ndarray:
    return (bank.mean @ colour.matrix + colour.base).astype(np.float32)


def matched(colour: ClassColour, bank: TextureBank, target: np.ndarray) -> ClassColour:
    """``colour`` shifted so that ``bank`` in it has the mean colour ``target``."""
    return replace(colour, base=(colour.base + target - mean_colour(colour, bank)).astype(np.float32))


def node_colours(seed: int, texture: str, banks: dict[str, TextureBank]) -> SlideColours:
    """The slide's colours (glass, capsule, folds as in version 1) with one class per compartment."""
    v1 = slide_colours(seed, texture)
    stain, glass = draw_stain(np.random.default_rng([seed, 7]))  # the same stain as ``v1``
    classes = {name: _procedural(stain, glass, bg, scale) for name, (_, bg, scale) in PROCEDURAL.items()}
    if texture == "camelyon16":
        normal = v1.classes["normal"]
        for name, (_, gain) in REAL.items():
            source = v1.classes["tumour"] if name == "tumour" else normal
            # Darken or lighten the absorbed light: rgb' = white - gain * (white - rgb), affine in rgb.
            white = glass.astype(np.float32)
            classes[name] = ClassColour(
                (white - gain * (white - source.base)).astype(np.float32),
                (gain * source.matrix).astype(np.float32),
            )
    bank = bank_of(texture)
    target = mean_colour(classes["tumour"], banks[bank["tumour"]])
    for name in MATCHED:
        classes[name] = matched(classes[name], banks[bank[name]], target)
    return SlideColours(v1.glass, classes, v1.capsule, v1.fold_gain)


def _procedural(
    stain: Stain, glass: np.ndarray, background: tuple[float, float], scale: float
) -> ClassColour:
    return material_colour(stain, glass, background, scale)
