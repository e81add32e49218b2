"""Per-slide colours: H&E stain variation by the Beer-Lambert law (Ruifrok & Johnston 2001, Anal. Quant.
Cytol. Histol. 23(4)); reference stain vectors from Macenko et al. 2009 (ISBI), tuned by eye against the
Camelyon16 patches in ``../shared/data/textures/camelyon16``.

A texture pixel holds material fractions ``f`` (procedural) or RGB (real patches); its colour is
``base + f @ matrix`` — linear, so that area-averaging commutes with colouring and a coarse level can be
coloured from the mean fractions (issue #3, consistency across levels). The stain model is non-linear only
per *material*, once per slide.

The per-slide variation (stain vectors, stain amounts, brightness) is made larger than the shift a lesion
causes in the slide's mean colour, so that the mean RGB does not give the label (issue #3; METHOD.md §7),
while the lesion stays locally paler and pinker than the parenchyma around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Optical-density directions (R, G, B) of haematoxylin and eosin.
H_OD = np.array([0.60, 0.76, 0.26])
E_OD = np.array([0.10, 0.96, 0.26])

# Procedural material channels (see textures.py): dark nucleus, pale nucleus, clear space, dense eosin.
# (haematoxylin, eosin) amounts of each material and of each class's background (stroma / cytoplasm).
MATERIALS = {"dark": (1.55, 0.45), "pale": (0.62, 0.38), "clear": (0.02, 0.03), "eosin": (0.12, 1.05)}
BACKGROUND = {
    "normal": (0.36, 0.42),  # lymphoid stroma between lymphocytes: purplish pink
    "follicle": (0.26, 0.36),  # germinal centre: paler, still purple
    "tumour": (0.10, 0.52),  # carcinoma cytoplasm: paler and pinker (the real patches show it)
}
NUCLEUS_SCALE = {"normal": 1.0, "follicle": 0.72, "tumour": 1.0}
CAPSULE = (0.12, 0.85)  # fibrous capsule: eosinophilic collagen


@dataclass(frozen=True)
class ClassColour:
    """``rgb = base + channels @ matrix`` for channels in 0..255 (uint8 storage)."""

    base: np.ndarray  # (3,) float32
    matrix: np.ndarray  # (4, 3) float32, already divided by 255


@dataclass(frozen=True)
class SlideColours:
    glass: np.ndarray  # (3,) float32
    classes: dict[str, ClassColour]
    capsule: np.ndarray  # (3,)
    fold_gain: float  # a fold (two layers of tissue) keeps this fraction of the light


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def slide_colours(seed: int, texture: str) -> SlideColours:
    """Draw the stain of slide ``seed``; ``texture`` is ``procedural`` or ``camelyon16``."""
    rng = np.random.default_rng([seed, 7])
    h_od = _unit(np.clip(H_OD + rng.normal(0, 0.05, 3), 0.05, None))
    e_od = _unit(np.clip(E_OD + rng.normal(0, 0.05, 3), 0.05, None))
    h_amount = rng.uniform(0.7, 1.3)
    e_amount = rng.uniform(0.65, 1.35)
    brightness = rng.uniform(0.93, 1.02) * rng.uniform(0.985, 1.015, 3)
    glass = (255.0 * brightness * rng.uniform(0.94, 0.985)).astype(np.float32)

    def colour(h: float, e: float) -> np.ndarray:
        return 255.0 * brightness * np.exp(-(h * h_amount * h_od + e * e_amount * e_od))

    classes: dict[str, ClassColour] = {}
    if texture == "procedural":
        for name, (bh, be) in BACKGROUND.items():
            base = colour(bh, be)
            scale = NUCLEUS_SCALE[name]
            rows = []
            for material, (mh, me) in MATERIALS.items():
                if material in ("dark", "pale"):
                    mh, me = mh * scale, me
                rows.append(glass if material == "clear" else colour(mh, me))
            matrix = (np.stack(rows) - base[None, :]) / 255.0
            classes[name] = ClassColour(base.astype(np.float32), matrix.astype(np.float32))
    else:
        # Real RGB patches: a random linear map near the identity stands for the stain variation
        # (a linear map keeps area-averaging consistent); follicles are the normal texture, lightened.
        mix = np.eye(3) + rng.normal(0, 0.04, (3, 3))
        gain = brightness * rng.uniform(0.92, 1.04, 3)
        matrix3 = (mix * gain[None, :]).T  # rgb_row @ matrix3
        matrix = np.concatenate([matrix3, np.zeros((1, 3))]) / 255.0
        offset = rng.normal(0, 4.0, 3)
        classes["normal"] = ClassColour(offset.astype(np.float32), matrix.astype(np.float32))
        classes["tumour"] = ClassColour(offset.astype(np.float32), matrix.astype(np.float32))
        lighten = 0.78
        classes["follicle"] = ClassColour(
            (offset * lighten + (1 - lighten) * glass).astype(np.float32), (matrix * lighten).astype(np.float32)
        )
    return SlideColours(glass, classes, colour(*CAPSULE).astype(np.float32), float(rng.uniform(0.68, 0.82)))
