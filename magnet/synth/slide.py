"""``VirtualSlide``: a gigapixel lymph-node slide rendered on demand from its URI (docs/virtual-slides.md).

Pyramid: downsamples 1, 4, 16, 64, ... (powers of 4) until the longer side is at most 512 px, i.e.
1, 4, 16, 64, 256 for the default 100,000 px slide. Why powers of 4: they are the steps of common 40x
scanner pyramids (and Camelyon's TIFFs), the texture banks keep exact box-averaged copies at 1, 4 and 16
(textures.py), and a 448 px read at 256x still shows the whole default slide. ``level_downsamples`` are the
exact powers the renderer uses (level sizes are floored, so sizes alone would give e.g. 256.4).

Ground truth: ``lesion_class`` ("negative", "macro", "micro", "itc"; Camelyon17 rules on the largest
lesion), ``lesions`` (outlines as ``(K, 2)`` float arrays of level-0 ``(x, y)``), ``label`` (0/1) and, in
versions 2-4, ``lookalikes`` (benign mimics of lesions, lookalikes.py).

The generator version of the URI (``version=1`` by default, ``version=2``, ``3``, ``4``) picks the layout,
renderer and texture banks: ``_GENERATORS`` below, one entry per version, each built from its own modules
(version 1: layout.py, render.py; versions 2 and 3: anatomy.py, lookalikes.py, node_render.py; they differ
in the order lesions and look-alikes are placed; version 4 is version 3 with the nest pattern of nests.py
on some lesions and fewer look-alikes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from magnet.errors import SlideError
from magnet.slides.base import Slide
from magnet.synth.anatomy import NodeLayout, make_node_layout, make_node_layout_v3
from magnet.synth.cells import cell_bank
from magnet.synth.centres import Centre, apply_centre, centre_named
from magnet.synth.layout import Layout, make_layout
from magnet.synth.lookalikes import Lookalike
from magnet.synth.node_colours import BANKS as NODE_BANKS
from magnet.synth.node_render import NestedNodeRenderer, NodeRenderer
from magnet.synth.render import Renderer
from magnet.synth.stain import slide_colours
from magnet.synth.textures import TextureBank, camelyon16_bank, procedural_bank
from magnet.synth.uri import SynthSpec, parse_uri

LEVEL_STEP = 4
SMALLEST_LEVEL_SIDE = 512


def pyramid_downsamples(size: tuple[int, int]) -> tuple[int, ...]:
    downsamples = [1]
    while max(size) / downsamples[-1] > SMALLEST_LEVEL_SIDE:
        downsamples.append(downsamples[-1] * LEVEL_STEP)
    return tuple(downsamples)


def _v1_banks(spec: SynthSpec) -> dict[str, TextureBank]:
    if spec.texture == "camelyon16":
        folder = str(spec.resolved_texture_dir)
        return {k: camelyon16_bank(k, spec.mpp, folder) for k in ("normal", "tumour")}
    return {k: procedural_bank(k, spec.mpp) for k in ("normal", "tumour")}


def _v2_banks(spec: SynthSpec) -> dict[str, TextureBank]:
    banks = _v1_banks(spec)  # normal and tumour: procedural or real patches
    banks.update({k: cell_bank(k, spec.mpp) for k in NODE_BANKS if k not in banks})
    return banks


def _v1_renderer(spec: SynthSpec, layout: Layout) -> Renderer:
    return Renderer(spec.seed, spec.size, spec.mpp, layout, slide_colours(spec.seed, spec.texture))


def _v2_renderer(spec: SynthSpec, layout: Layout) -> Renderer:
    assert isinstance(layout, NodeLayout)
    return NodeRenderer(spec.seed, spec.size, spec.mpp, layout, spec.texture)


def _v4_renderer(spec: SynthSpec, layout: Layout) -> Renderer:
    assert isinstance(layout, NodeLayout)
    return NestedNodeRenderer(spec.seed, spec.size, spec.mpp, layout, spec.texture)


@dataclass(frozen=True)
class Generator:
    """One generator version: geometry from the spec, a renderer of it, and its texture banks."""

    layout: Callable[[SynthSpec], Layout]
    renderer: Callable[[SynthSpec, Layout], Renderer]
    banks: Callable[[SynthSpec], dict[str, TextureBank]]


_GENERATORS = {
    1: Generator(make_layout, _v1_renderer, _v1_banks),
    2: Generator(make_node_layout, _v2_renderer, _v2_banks),
    3: Generator(make_node_layout_v3, _v2_renderer, _v2_banks),
    4: Generator(make_node_layout_v3, _v4_renderer, _v2_banks),
}


# Drawing a slide's layout (sections, lesions, look-alikes, follicles) takes 30-50 ms, about as long as
# rendering one 224-px read, and a run opens each slide many times: the data set, the manifest check, the
# head warm-up, every epoch (the slide pool keeps 64 slides open, fewer than a training split) and every
# evaluation. The layout depends on the spec alone, so it is drawn once per spec and shared: it is read-only
# once drawn (the renderers only read it). About 80 KB each, so the cache holds at most some 160 MB.
LAYOUT_CACHE_SLIDES = 2048


@functools.lru_cache(maxsize=LAYOUT_CACHE_SLIDES)
def _drawn_layout(draw: Callable[[SynthSpec], Layout], spec: SynthSpec) -> Layout:
    """``draw(spec)``, once per ``(draw, spec)``: a generator swapped for another draws afresh."""
    return draw(spec)


class VirtualSlide(Slide):
    """A virtual slide; ``path`` is its canonical URI."""

    backend = "synth"

    def __init__(self, uri: str) -> None:
        self.spec: SynthSpec = parse_uri(uri)
        super().__init__(self.spec.uri)
        if self.spec.texture == "camelyon16":
            folder = self.spec.resolved_texture_dir
            if not (folder / "labels.csv").is_file():
                raise SlideError(self.spec.uri, f"texture folder {folder} has no labels.csv")
        self._generator = _GENERATORS[self.spec.version]
        self.layout: Layout = _drawn_layout(self._generator.layout, self.spec)
        self._downsamples = pyramid_downsamples(self.spec.size)
        self._renderer = self._generator.renderer(self.spec, self.layout)
        self.centre: Centre = centre_named(self.spec.centre)

    # --- geometry and metadata --------------------------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        w, h = self.spec.size
        return tuple((max(1, w // d), max(1, h // d)) for d in self._downsamples)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._downsamples)

    @property
    def mpp(self) -> tuple[float, float] | None:
        return (self.spec.mpp, self.spec.mpp)

    @property
    def vendor(self) -> str:
        return "magnet-synth"

    # --- ground truth -----------------------------------------------------------------------------------
    @property
    def lesion_class(self) -> str:
        return self.spec.lesion

    @property
    def label(self) -> int:
        return 0 if self.spec.lesion == "negative" else 1

    @property
    def lesions(self) -> list[np.ndarray]:
        """Lesion outlines, largest first: ``(K, 2)`` float64 arrays of level-0 ``(x, y)``."""
        return [lesion.shape.polygon() for lesion in self.layout.lesions]

    @property
    def lesion_extents_um(self) -> list[float]:
        return [lesion.extent_um for lesion in self.layout.lesions]

    @property
    def version(self) -> int:
        """The generator version (URI key ``version``; 1 when absent)."""
        return self.spec.version

    @property
    def lookalikes(self) -> list[Lookalike]:
        """Benign look-alikes of lesions (version 2; none in version 1): each has ``kind``, ``polygon``
        (``(K, 2)`` level-0 ``(x, y)``), ``extent_um`` and ``mimics`` (the lesion class of its size)."""
        return list(self.layout.lookalikes) if isinstance(self.layout, NodeLayout) else []

    @property
    def nested(self) -> list[np.ndarray]:
        """Outlines (``(K, 2)`` level-0 ``(x, y)``) of the lesions and look-alikes drawn with the nest pattern
        of version 4 (nests.py); none before version 4."""
        shapes = self._renderer.mottled if isinstance(self._renderer, NestedNodeRenderer) else []
        return [shape.polygon() for shape in shapes]

    # --- pixels -----------------------------------------------------------------------------------------
    def _banks(self) -> None:
        if self._renderer.banks is None:
            self._renderer.banks = self._generator.banks(self.spec)

    def render(self, x0: float, y0: float, downsample: float, width: int, height: int) -> np.ndarray:
        """``uint8 (height, width, 3)``: pixels of ``downsample`` level-0 px from level-0 ``(x0, y0)``.

        Any downsample >= 1 works, not only the pyramid's (a whole-slide 112 x 112 view is one call);
        between the texture bank's scales the region is drawn at the next finer one and box-averaged.
        """
        if not (downsample >= 1.0 and math.isfinite(downsample)):
            raise SlideError(self.path, f"downsample must be >= 1, got {downsample}")
        if width <= 0 or height <= 0:
            raise SlideError(self.path, f"region size must be positive, got {width}x{height}")
        if self.centre.is_identity:
            return self._render_plain(x0, y0, downsample, width, height)
        # The centre's look (magnet.synth.centres) on a region grown by the blur's reach, then cropped, so
        # that a region's edge is blurred with the pixels beyond it, as a larger read would be.
        m = self.centre.margin_px(self.spec.mpp, downsample)
        plain = self._render_plain(x0 - m * downsample, y0 - m * downsample, downsample, width + 2 * m,
                                   height + 2 * m)
        looked = apply_centre(plain, self.centre, slide_seed=self.spec.seed, mpp=self.spec.mpp,
                              downsample=downsample, location=(x0, y0))
        return np.ascontiguousarray(looked[m : m + height, m : m + width])

    def _render_plain(self, x0: float, y0: float, downsample: float, width: int, height: int) -> np.ndarray:
        """The region as the generator renders it, before any centre's look."""
        self._banks()
        assert self._renderer.banks is not None
        scales = self._renderer.banks["normal"].scales
        if downsample in scales or downsample > max(scales):
            return self._renderer.render(x0, y0, downsample, width, height)
        from PIL import Image

        finer = max(s for s in scales if s < downsample)
        fw, fh = math.ceil(width * downsample / finer), math.ceil(height * downsample / finer)
        detailed = self._renderer.render(x0, y0, finer, fw, fh)
        box = (0.0, 0.0, width * downsample / finer, height * downsample / finer)
        image = Image.fromarray(detailed).resize((width, height), Image.Resampling.BOX, box=box)
        return np.asarray(image)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if not 0 <= level < self.level_count:
            raise SlideError(self.path, f"level {level} out of range 0..{self.level_count - 1}")
        width, height = int(size[0]), int(size[1])
        return self.render(
            float(location[0]), float(location[1]), float(self._downsamples[level]), width, height
        )


def open_virtual_slide(uri: str) -> VirtualSlide:
    """Opener registered for the ``synth:`` scheme."""
    return VirtualSlide(uri)
