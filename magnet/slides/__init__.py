"""Slide access: ``open_slide`` for files, URIs and images; ``RegionReader`` for the model's ROIs.

Among the file backends that open a file, the one that sees the most pyramid levels wins (see
``registry.open_slide``).
"""

from magnet.slides.base import NotThisFormat, Slide
from magnet.slides.memory import MemorySlide
from magnet.slides.openslide_backend import OpenSlideSlide
from magnet.slides.registry import open_slide, register_file_backend, register_scheme, slide_identity
from magnet.slides.tiff_backend import TiffSlide

__all__ = [
    "MemorySlide",
    "NotThisFormat",
    "OpenSlideSlide",
    "Slide",
    "TiffSlide",
    "open_slide",
    "register_file_backend",
    "register_scheme",
    "slide_identity",
]
