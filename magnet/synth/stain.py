"""Per-slide colours: H&E stain variation by the Beer-Lambert law (Ruifrok & Johnston 2001, Anal. Quant.
Cytol. Histol. 23(4)); reference stain vectors from Macenko et al. 2009 (ISBI), tuned by eye against the
Camelyon16 patches shipped in ``magnet/synth/camelyon16``.

A texture pixel holds material fractions ``f`` (procedural) or RGB (real patches); its colour is
``base + f @ matrix`` — linear, so that area-averaging commutes with colouring and a coarse level can be
coloured from the mean fractions (consistency across levels). The stain model is non-linear only
per *material*, once per slide.

The per-slide variation (stain vectors, stain amounts, brightness) is made larger than the shift a lesion
causes in the slide's mean colour, so that the mean RGB does not give the label (docs/method.md §7),
while the lesion stays locally paler and pinker than the parenchyma around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Optical-density directions (R, G, B) of haematoxylin and eosin.
# Estimated from the Camelyon16 patches (Radboud scanner): the optical density of the darkest 5 % of pixels
# (nuclei) and of the lightest stained pixels (cytoplasm), separated into two stains.
H_OD = np.array([0.62, 0.72, 0.31])
E_OD = np.array([0.20, 0.80, 0.57])

# Procedural material channels (see textures.py): dark nucleus, pale nucleus, clear space, dense eosin.
# (haematoxylin, eosin) amounts of each material and of each class's background (stroma / cytoplasm).
# Tuned so that the mean colours at low power differ as the real patches' do (tumour redder, about as dark
# in green): bank means at the reference stain are normal (171, 123, 160), tumour (187, 126, 163), follicle
# (184, 136, 170) - the follicle is a paler but not pinker distractor.
MATERIALS = {"dark": (1.3, 0.8), "pale": (0.75, 0.6), "clear": (0.02, 0.03), "eosin": (0.1, 1.25)}
BACKGROUND = {
    "normal": (0.12, 0.36),  # lymphoid stroma between lymphocytes: purplish pink
    "follicle": (0.1, 0.3),  # germinal centre: paler, still purple
    "tumour": (0.14, 0.55),  # carcinoma cytoplasm: pinker (the real patches show it)
}
NUCLEUS_SCALE = {"normal": 1.0, "follicle": 0.7, "tumour": 1.0}
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


@dataclass(frozen=True)
class Stain:
    """One slide's H&E: stain directions, amounts and the scanner's brightness per channel."""

    h_od: np.ndarray
    e_od: np.ndarray
    h_amount: float
    e_amount: float
    brightness: np.ndarray  # (3,)

    def colour(self, h: float, e: float) -> np.ndarray:
        """RGB (0..255) of ``h`` haematoxylin and ``e`` eosin by Beer-Lambert."""
        absorbance = h * self.h_amount * self.h_od + e * self.e_amount * self.e_od
        return 255.0 * self.brightness * np.exp(-absorbance)


def draw_stain(rng: np.random.Generator) -> tuple[Stain, np.ndarray]:
    """The stain and the glass colour of one slide (the first draws of its colour stream)."""
    h_od = _unit(np.clip(H_OD + rng.normal(0, 0.05, 3), 0.05, None))
    e_od = _unit(np.clip(E_OD + rng.normal(0, 0.05, 3), 0.05, None))
    h_amount = rng.uniform(0.7, 1.3)
    e_amount = rng.uniform(0.65, 1.35)
    brightness = rng.uniform(0.93, 1.02) * rng.uniform(0.985, 1.015, 3)
    glass = (255.0 * brightness * rng.uniform(0.94, 0.985)).astype(np.float32)
    return Stain(h_od, e_od, h_amount, e_amount, brightness), glass


def material_colour(
    stain: Stain,
    glass: np.ndarray,
    background: tuple[float, float],
    nucleus_scale: float = 1.0,
    materials: dict[str, tuple[float, float]] = MATERIALS,
) -> ClassColour:
    """The linear colour map of procedural channels on a class ``background`` (haematoxylin, eosin)."""
    base = stain.colour(*background)
    rows = []
    for material, (mh, me) in materials.items():
        if material in ("dark", "pale"):
            mh, me = mh * nucleus_scale, me
        rows.append(glass if material == "clear" else stain.colour(mh, me))
    matrix = (np.stack(rows) - base[None, :]) / 255.0
    return ClassColour(base.astype(np.float32), matrix.astype(np.float32))


def slide_colours(seed: int, texture: str) -> SlideColours:
    """Draw the stain of slide ``seed``; ``texture`` is ``procedural`` or ``camelyon16``."""
    rng = np.random.default_rng([seed, 7])
    stain, glass = draw_stain(rng)
    brightness = stain.brightness
    colour = stain.colour
    classes: dict[str, ClassColour] = {}
    if texture == "procedural":
        for name, background in BACKGROUND.items():
            classes[name] = material_colour(stain, glass, background, NUCLEUS_SCALE[name])
    else:
        # Real RGB patches: an affine map that keeps white white and scales the absorbed light per channel
        # (stain strength), with a little channel mixing (hue): rgb' = 255 b - (255 b - rgb) A. Affine, so
        # area-averaging stays consistent; follicles are the normal texture, lightened.
        absorb = (np.eye(3) + rng.normal(0, 0.03, (3, 3))) * rng.uniform(0.8, 1.2, 3)[None, :]
        white = 255.0 * brightness
        matrix3 = absorb.T  # rgb_row @ matrix3
        matrix = np.concatenate([matrix3, np.zeros((1, 3))])  # channels are RGB 0..255 already
        offset = white - white @ matrix3
        classes["normal"] = ClassColour(offset.astype(np.float32), matrix.astype(np.float32))
        classes["tumour"] = ClassColour(offset.astype(np.float32), matrix.astype(np.float32))
        lighten = 0.78
        classes["follicle"] = ClassColour(
            (offset * lighten + (1 - lighten) * glass).astype(np.float32),
            (matrix * lighten).astype(np.float32),
        )
    return SlideColours(glass, classes, colour(*CAPSULE).astype(np.float32), float(rng.uniform(0.68, 0.82)))
