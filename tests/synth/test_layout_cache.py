"""A virtual slide's layout is drawn once per spec and shared by every later open of the same URI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from magnet.synth import VirtualSlide
from magnet.synth import slide as synth_slide
from magnet.synth.anatomy import make_node_layout_v3
from magnet.synth.layout import Layout
from magnet.synth.uri import SynthSpec, parse_uri

MICRO = "synth:seed=11,size=20000x20000,lesion=micro,mpp=0.5,version=4"


def _whole_slide(slide: VirtualSlide) -> np.ndarray:
    level = slide.level_count - 1
    return slide.read_region((0, 0), level, slide.level_dimensions[level])


def test_a_second_open_shares_the_layout_and_renders_as_a_fresh_draw() -> None:
    first, second = VirtualSlide(MICRO), VirtualSlide(MICRO)
    assert second.layout is first.layout
    pixels = _whole_slide(second)
    synth_slide._drawn_layout.cache_clear()
    fresh = VirtualSlide(MICRO)  # drawn again from its spec
    assert fresh.layout is not first.layout
    assert fresh.lesion_extents_um == first.lesion_extents_um
    np.testing.assert_array_equal(_whole_slide(fresh), pixels)


def test_other_specs_and_a_swapped_generator_draw_their_own_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    base = VirtualSlide(MICRO)
    assert VirtualSlide(MICRO.replace("seed=11", "seed=12")).layout is not base.layout
    drawn: list[SynthSpec] = []

    def counting(spec: SynthSpec) -> Layout:
        drawn.append(spec)
        return make_node_layout_v3(spec)

    generators = dict(synth_slide._GENERATORS)
    generators[4] = replace(generators[4], layout=counting)
    monkeypatch.setattr(synth_slide, "_GENERATORS", generators)
    swapped, again = VirtualSlide(MICRO), VirtualSlide(MICRO)
    assert swapped.layout is not base.layout and again.layout is swapped.layout
    assert drawn == [parse_uri(MICRO)]
