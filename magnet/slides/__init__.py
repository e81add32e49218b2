"""Slide access: ``open_slide`` for files, URIs and images; ``RegionReader`` for the model's ROIs.

File backends are registered here in order of preference (see ``registry.open_slide``: among the backends
that open a file, the one that sees the most pyramid levels wins; ties go to the earlier one):
OpenSlide (the most formats, thread-safe C reads), then tiffslide (TIFF / OME-TIFF SubIFD pyramids), then
plain images through Pillow.
"""

from magnet.slides.base import Slide
from magnet.slides.memory import MemorySlide, open_image_file
from magnet.slides.openslide_backend import OpenSlideSlide, open_openslide
from magnet.slides.registry import NotThisFormat, open_slide, register_file_backend, register_scheme
from magnet.slides.tiff_backend import TiffSlide, open_tiffslide

register_file_backend("openslide", open_openslide)
register_file_backend("tiffslide", open_tiffslide)
register_file_backend("image", open_image_file)

__all__ = [
    "MemorySlide",
    "NotThisFormat",
    "OpenSlideSlide",
    "Slide",
    "TiffSlide",
    "open_slide",
    "register_file_backend",
    "register_scheme",
]
