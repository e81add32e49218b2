"""Slide access: ``open_slide`` for files, URIs and images; ``RegionReader`` for the model's ROIs.

File backends are registered here in order of preference (see ``registry.open_slide``: among the backends
that open a file, the one that sees the most pyramid levels wins).
"""

from magnet.slides.base import Slide
from magnet.slides.memory import MemorySlide, open_image_file
from magnet.slides.registry import open_slide, register_file_backend, register_scheme

register_file_backend("image", open_image_file)

__all__ = ["MemorySlide", "Slide", "open_slide", "register_file_backend", "register_scheme"]
