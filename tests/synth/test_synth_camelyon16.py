"""Virtual slides textured with the real Camelyon16 patches (``texture=camelyon16``).

The patches ship inside the package (``magnet/synth/camelyon16``), so these tests run on a fresh clone.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

import magnet.synth
from magnet.errors import SlideError
from magnet.synth import VirtualSlide
from magnet.synth.textures import camelyon16_bank
from magnet.synth.uri import default_texture_dir

FOLDER = default_texture_dir()
URI = "synth:seed=6,size=8192x8192,lesion=itc,texture=camelyon16"


def test_patches_ship_inside_the_package() -> None:
    assert FOLDER == Path(magnet.synth.__file__).resolve().parent / "camelyon16"
    with (FOLDER / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 57
    assert sum(row["label"] == "1" for row in rows) == 28 and sum(row["label"] == "0" for row in rows) == 29
    assert all((FOLDER / row["file"]).is_file() for row in rows)
    assert (FOLDER / "SOURCE.md").is_file()


def test_camelyon16_region_renders_from_the_packaged_patches(tmp_path: Path) -> None:
    slide = VirtualSlide("synth:seed=3,size=8192x8192,lesion=micro,texture=camelyon16")
    assert slide.spec.resolved_texture_dir == FOLDER
    cx, cy = (int(v) for v in slide.lesions[0].mean(0))
    region = slide.read_region((cx - 128, cy - 128), 0, (256, 256))
    assert region.shape == (256, 256, 3) and region.std() > 20  # real texture, not flat colour
    # texture_dir= still takes a user's folder: a copy of the packaged one renders the same pixels.
    copy = tmp_path / "my-patches"
    shutil.copytree(FOLDER, copy)
    user = VirtualSlide(f"synth:seed=3,size=8192x8192,lesion=micro,texture=camelyon16,texture_dir={copy}")
    assert user.spec.resolved_texture_dir == copy
    np.testing.assert_array_equal(user.read_region((cx - 128, cy - 128), 0, (256, 256)), region)


def test_real_patches_render_and_lesions_stay_pinker() -> None:
    slide = VirtualSlide(URI)
    assert slide.path == URI
    normal = camelyon16_bank("normal", 0.25, str(FOLDER)).mean[:3]
    tumour = camelyon16_bank("tumour", 0.25, str(FOLDER)).mean[:3]
    # The real patches carry the look the procedural texture imitates: tumour redder and pinker.
    assert tumour[0] > normal[0] and tumour[0] - tumour[2] > normal[0] - normal[2]
    cx, cy = (int(v) for v in slide.lesions[0].mean(0))
    region = slide.read_region((cx - 256, cy - 256), 0, (512, 512))
    assert region.shape == (512, 512, 3) and region.std() > 20  # real texture, not flat colour
    again = VirtualSlide(URI).read_region((cx - 256, cy - 256), 0, (512, 512))
    np.testing.assert_array_equal(region, again)


def test_patch_seams_are_blended_away() -> None:
    slide = VirtualSlide(URI)
    section = slide.layout.sections[0]
    tile = camelyon16_bank("normal", 0.25, str(FOLDER)).tile
    # A level-0 strip well inside the tissue, starting on a block seam of the unshifted layer.
    x0 = int(section.cx) // tile * tile
    image = slide.read_region((x0, int(section.cy) - 128), 0, (4 * tile, 256)).astype(float).mean(-1)
    steps = np.abs(np.diff(image, axis=1)).mean(0)  # step between column x and x+1
    seams = [k * tile - 1 for k in range(1, 4)] + [k * tile + tile // 2 - 1 for k in range(3)]
    assert steps[seams].mean() < 1.3 * np.median(steps)


def test_missing_texture_folder_is_a_one_line_error(tmp_path: object) -> None:
    with pytest.raises(SlideError, match="has no labels.csv") as info:
        VirtualSlide(f"synth:seed=1,size=8192x8192,texture=camelyon16,texture_dir={tmp_path}")
    assert "\n" not in str(info.value)
