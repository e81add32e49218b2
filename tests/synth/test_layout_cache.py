"""A virtual slide's layout is drawn once per spec and shared by every later open of the same URI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from magnet.synth import VirtualSlide
from magnet.synth import slide as synth_slide
from magnet.synth.anatomy import make_node_layout_v3
from magnet.synth.uri import parse_uri

MICRO = "synth:seed=11,size=20000x20000,lesion=micro,mpp=0.5,version=4"


def test_a_second_open_shares_the_layout_and_renders_the_same_pixels_as_a_fresh_draw() -> None:
    first, second = VirtualSlide(MICRO), VirtualSlide(MICRO)
    assert second.layout is first.layout
    fresh = make_node_layout_v3(parse_uri(MICRO))
    assert fresh is not first.layout
    assert [lesion.extent_um for lesion in fresh.lesions] == first.lesion_extents_um
    region = ((4000, 4000), 0, (96, 64))
    pixels = second.read_region(*region)
    first._renderer.layout = fresh  # the same renderer state, drawn from the uncached layout
    np.testing.assert_array_equal(first.read_region(*region), pixels)


def test_other_specs_and_a_swapped_generator_draw_their_own_layout(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    base = VirtualSlide(MICRO)
    other = VirtualSlide(MICRO.replace("seed=11", "seed=12"))
    assert other.layout is not base.layout
    drawn = []

    def counting(spec):  # type: ignore[no-untyped-def]
        drawn.append(spec)
        return make_node_layout_v3(spec)

    generators = dict(synth_slide._GENERATORS)
    generators[4] = replace(generators[4], layout=counting)
    monkeypatch.setattr(synth_slide, "_GENERATORS", generators)
    swapped, again = VirtualSlide(MICRO), VirtualSlide(MICRO)
    assert swapped.layout is not base.layout and again.layout is swapped.layout
    assert drawn == [parse_uri(MICRO)]
