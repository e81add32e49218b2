"""Export of a virtual slide to a pyramidal TIFF, read back through open_slide (OpenSlide)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magnet.cli import main
from magnet.slides.registry import open_slide
from magnet.synth import VirtualSlide

URI = "synth:seed=6,size=4096x3072,lesion=itc"


def test_export_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "virtual.tif"
    assert main(["synth", "export", URI, str(out)]) == 0
    virtual = VirtualSlide(URI)
    with open_slide(out) as exported:
        assert exported.level_dimensions == virtual.level_dimensions
        assert exported.mpp is not None and np.allclose(exported.mpp, 0.25, rtol=1e-3)
        for level, (w, h) in enumerate(virtual.level_dimensions):
            if level == 0:  # a window around the lesion keeps the test fast
                cx, cy = (int(v) for v in virtual.lesions[0].mean(0))
                location, size = (cx - 512, cy - 512), (1024, 1024)
            else:
                location, size = (0, 0), (w, h)
            want = virtual.read_region(location, level, size).astype(float)
            got = exported.read_region(location, level, size).astype(float)
            # JPEG at quality 90 with 2x2 chroma subsampling: small mean error, same picture.
            assert np.abs(got - want).mean() < 4.0, level
            assert np.abs(got.mean((0, 1)) - want.mean((0, 1))).max() < 1.5, level


def test_export_renders_the_centre(tmp_path: Path) -> None:
    uri = URI + ",centre=dark"
    assert main(["synth", "export", uri, str(tmp_path / "dark.tif")]) == 0
    dark, plain = VirtualSlide(uri), VirtualSlide(URI)
    level = dark.level_count - 1
    size = dark.level_dimensions[level]
    with open_slide(tmp_path / "dark.tif") as exported:
        got = exported.read_region((0, 0), level, size).astype(float)
    want = dark.read_region((0, 0), level, size).astype(float)
    other = plain.read_region((0, 0), level, size).astype(float)
    assert np.abs(got - want).mean() < 4.0 < np.abs(got - other).mean()
