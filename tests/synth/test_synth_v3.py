"""Version 3 of the generator: version 2 with the look-alikes placed blind to the lesions.

In version 2 a lesion could crowd out a look-alike (above all the large reactive germinal centre), so
positive slides held fewer of them than negatives and a model could score a slide without seeing its lesion.
"""

from __future__ import annotations

import numpy as np
import pytest

from magnet.synth import VirtualSlide
from magnet.synth.anatomy import NodeLayout, make_node_layout, make_node_layout_v3
from magnet.synth.uri import SynthSpec

SIZE, MPP = (32768, 32768), 0.25  # 8-mm slides: the benchmark's size, geometry only (no pixels)
SEEDS = range(200, 230)


def _circles(shapes: list) -> list[tuple[float, ...]]:  # type: ignore[type-arg]
    return [(s.cx, s.cy, *np.round(s.radii, 6)) for s in shapes]


def _outside_lesions(layout: NodeLayout) -> dict[str, list]:  # type: ignore[type-arg]
    """What a slide shows besides its lesions and their rims (a rim is centred on its lesion)."""
    lesion_centres = {(lesion.shape.cx, lesion.shape.cy) for lesion in layout.lesions}
    return {
        "lookalikes": [(item.kind, *_circles([item.shape])[0]) for item in layout.lookalikes],
        "mantles": _circles([m for m in layout.mantles if (m.cx, m.cy) not in lesion_centres]),
        "sections": _circles(layout.sections),
        "fat": _circles(layout.fat),
        "vessels": _circles(layout.vessels),
        "pens": [(p.band.cx, p.band.cy) for p in layout.pens],
    }


@pytest.mark.parametrize("lesion", ["itc", "micro"])
def test_a_small_lesion_slide_is_its_negative_twin_plus_the_lesion(lesion: str) -> None:
    for seed in SEEDS:
        negative = make_node_layout_v3(SynthSpec(seed, SIZE, "negative", MPP, version=3))
        positive = make_node_layout_v3(SynthSpec(seed, SIZE, lesion, MPP, version=3))
        assert positive.lesions and not negative.lesions
        assert _outside_lesions(positive) == _outside_lesions(negative), seed


def _has_reactive_centre(layout: NodeLayout) -> bool:
    return any(item.kind == "germinal_centre" and item.mimics == "macro" for item in layout.lookalikes)


def test_version_2_positives_lose_the_reactive_centre_and_version_3_negatives_are_version_2s() -> None:
    # The clue version 3 removes: on version 2's ITC twins a 40-170 um lesion often leaves no room for the
    # macro-size reactive germinal centre that the negative of the same seed has.
    lost = 0
    for seed in SEEDS:
        negative = make_node_layout(SynthSpec(seed, SIZE, "negative", MPP, version=2))
        itc = make_node_layout(SynthSpec(seed, SIZE, "itc", MPP, version=2))
        lost += _has_reactive_centre(negative) and not _has_reactive_centre(itc)
        assert _outside_lesions(negative) == _outside_lesions(
            make_node_layout_v3(SynthSpec(seed, SIZE, "negative", MPP, version=3))
        )
    assert lost >= 3


def test_version_3_keeps_the_lesions_classes_and_renders() -> None:
    slide = VirtualSlide("synth:seed=11,size=20000x20000,lesion=micro,mpp=0.5,version=3")
    assert slide.version == 3 and slide.lesion_class == "micro" and slide.lookalikes
    v2 = VirtualSlide("synth:seed=11,size=20000x20000,lesion=micro,mpp=0.5,version=2")
    assert slide.lesion_extents_um == v2.lesion_extents_um
    cx, cy = (int(v) for v in slide.lesions[0].mean(0))
    region = slide.read_region((cx - 32, cy - 32), 0, (64, 64))
    assert region.shape == (64, 64, 3) and region.std() > 0
