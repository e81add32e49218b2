"""Virtual gigapixel lymph-node slides with ground truth (DESIGN.md "Virtual slides", issue #3).

``open_slide("synth:seed=17,size=100000x100000,lesion=micro")`` opens a ``VirtualSlide`` once this package is
imported (``magnet.slides`` imports it). ``make_dataset`` writes a manifest of virtual slides.
"""

from __future__ import annotations

from magnet.slides.registry import register_scheme
from magnet.synth.layout import lesion_class_for_extent
from magnet.synth.slide import VirtualSlide, open_virtual_slide, pyramid_downsamples
from magnet.synth.uri import SCHEME, SynthSpec, parse_uri

register_scheme(SCHEME, open_virtual_slide)

__all__ = [
    "SynthSpec",
    "VirtualSlide",
    "lesion_class_for_extent",
    "open_virtual_slide",
    "parse_uri",
    "pyramid_downsamples",
]
