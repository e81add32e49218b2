"""Virtual gigapixel lymph-node slides with ground truth (docs/virtual-slides.md).

``open_slide("synth:seed=17,size=100000x100000,lesion=micro")`` opens a ``VirtualSlide`` (the slide registry
names ``magnet.synth.slide.open_virtual_slide`` as the opener of the ``synth:`` scheme). ``make_dataset``
writes a manifest of virtual slides. ``version=3`` (or the older ``version=2``) in the URI selects the
lymph-node anatomy with benign look-alikes of lesions (``VirtualSlide.lookalikes``); without it, the
original generator.
"""

from __future__ import annotations

from magnet.data.lesions import lesion_class_for_extent
from magnet.synth.slide import VirtualSlide, open_virtual_slide, pyramid_downsamples
from magnet.synth.uri import SynthSpec, parse_uri

__all__ = [
    "SynthSpec",
    "VirtualSlide",
    "lesion_class_for_extent",
    "open_virtual_slide",
    "parse_uri",
    "pyramid_downsamples",
]
