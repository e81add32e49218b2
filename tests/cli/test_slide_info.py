"""``magnet slide-info``: text and JSON output, thumbnails, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magnet.cli import main

SHARED_SLIDES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "slides").resolve()
OME = SHARED_SLIDES / "CMU-1-Small-Region_pyramid.ome.tif"
BAD_DICOM = SHARED_SLIDES / "TCGA-XK-AAJU-01A-01-TS1_small_nonstandard.dcm"
RUN_CLI = [sys.executable, "-c", "import sys; from magnet.cli import main; sys.exit(main())"]


def test_json_output(tiny_tiff, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = tiny_tiff(mpp=0.5)
    assert main(["slide-info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {
        "path": str(path),
        "backend": "openslide",
        "vendor": "generic-tiff",
        "width": 128,
        "height": 96,
        "level_count": 3,
        "level_dimensions": [[128, 96], [64, 48], [32, 24]],
        "level_downsamples": [1.0, 2.0, 4.0],
        "mpp": [0.5, 0.5],
        "associated_images": [],
    }


def test_text_output_and_thumbnail(tiny_tiff, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = tiny_tiff()
    thumb = tmp_path / "thumb.png"
    assert main(["slide-info", str(path), "--thumbnail", str(thumb), "--thumbnail-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "generic-tiff (backend: openslide)" in out
    assert "128 x 96 pixels" in out
    assert "level 2: 32 x 24  downsample 4.0000" in out
    assert "mpp:         unknown" in out
    with Image.open(thumb) as image:
        assert image.size == (40, 30) and image.mode == "RGB"


@pytest.mark.skipif(not OME.exists(), reason=f"real data {OME} is absent")
def test_ome_tiff_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slide-info", str(OME), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["backend"], info["level_count"], info["width"], info["height"]) == (
        "tiffslide",
        4,
        2220,
        2967,
    )
    assert info["mpp"] == pytest.approx([0.499, 0.499])


def test_bad_inputs_print_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "random.svs").write_bytes(np.random.default_rng(1).bytes(2048))
    for target in (tmp_path / "missing.svs", tmp_path, tmp_path / "random.svs"):
        assert main(["slide-info", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"magnet: error: {target}") and err.count("\n") == 1


def test_bad_thumbnail_arguments(tiny_tiff, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = tiny_tiff()
    (tmp_path / "file.txt").write_text("in the way")
    assert main(["slide-info", str(path), "--thumbnail", str(tmp_path / "file.txt" / "t.png")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["slide-info", str(path), "--thumbnail", str(tmp_path / "new" / "t.png")]) == 0
    assert (tmp_path / "new" / "t.png").is_file()  # a missing folder is created
    assert (
        main(["slide-info", str(path), "--thumbnail", str(tmp_path / "t.png"), "--thumbnail-size", "0"]) == 2
    )
    assert "--thumbnail-size" in capsys.readouterr().err


def test_subprocess_bad_inputs_exit_nonzero_without_traceback(tiny_tiff, tmp_path: Path) -> None:
    path, _ = tiny_tiff(compression="jpeg")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(path.read_bytes()[:2000])
    (tmp_path / "random.svs").write_bytes(np.random.default_rng(2).bytes(2048))
    targets = [tmp_path / "missing.svs", tmp_path, tmp_path / "random.svs", truncated]
    if BAD_DICOM.exists():  # the real bad DICOM when the shared data is there
        targets.append(BAD_DICOM)
    for target in targets:
        done = subprocess.run(
            [*RUN_CLI, "slide-info", str(target)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"magnet: error: {target}"), done.stderr
