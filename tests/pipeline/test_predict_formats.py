"""Every slide format, end to end: ``magnet predict`` (and ``magnet explain``) on each real file of
``../shared/data/slides`` (skipped with the reason when that folder is absent) and on a virtual slide
exported to a pyramidal TIFF. A file that cannot be read is a failure row naming it and the reason, never a
crash. The model is tiny with random weights: what is checked is that each format is read whole and its
geometry reaches the outputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from pipeline_fixtures import one_thread, random_checkpoint

from magnet.cli import main
from magnet.evaluation.cohort_store import CohortStore
from magnet.slides.registry import open_slide

SHARED_SLIDES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "slides").resolve()
SHARED_REASON = f"real slide folder {SHARED_SLIDES} is absent (it lives beside the project)"
# The real files (../shared/data/README.md) and, for those that must fail, a fragment of the reason.
REAL_FILES = {
    "CMU-1-Small-Region.svs": "",
    "TCGA-CR-7395-01A-01-TS1_reduced.svs": "",
    "camelyon16_lowres_multiframe.dcm": "",
    "CMU-1-Small-Region_generic_pyramid_jpeg.tif": "",
    "CMU-1-Small-Region_pyramid.ome.tif": "",
    "TCGA-XK-AAJU-01A-01-TS1_small_nonstandard.dcm": "Couldn't get image flavor",
}
N_ROIS = [2, 4]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("model") / "random.ckpt")


def _check_slide_json(obj: dict[str, Any], size: tuple[int, int]) -> None:
    assert tuple(obj["slide_size"]) == size and 0 < obj["probability"] < 1
    assert [len(boxes) for boxes in obj["layers"]] == N_ROIS
    side = max(size)
    for boxes in obj["layers"]:
        for x0, y0, x1, y1 in boxes:
            assert all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x0 < x1 and y0 < y1
            assert x1 - x0 <= side * 3**0.5 + 1  # an ROI is at most sqrt(3) canvas sides (zoom s <= sqrt(3))
    assert len(obj["running_probabilities"]) == N_ROIS[-1]


@pytest.fixture(scope="module")
def real_run(checkpoint: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    """``magnet predict`` over the real slide folder, once: (exit status, output folder, rows by name)."""
    if not SHARED_SLIDES.exists():
        pytest.skip(SHARED_REASON)
    out = tmp_path_factory.mktemp("real") / "out"
    with one_thread():
        code = main(["predict", str(checkpoint), str(SHARED_SLIDES), "--out", str(out), "--no-progress",
                     "--batch-size", "2"])
    with (out / "predictions.csv").open(newline="") as handle:
        rows = {Path(r["slide"]).name: r for r in csv.DictReader(handle)}
    return code, out, rows


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_predict_reads_each_real_format_or_records_why_not(real_run, name: str) -> None:  # type: ignore[no-untyped-def]
    code, out, rows = real_run
    assert code == (1 if any(REAL_FILES.values()) else 0)
    path = SHARED_SLIDES / name
    row = rows[name]
    assert row["slide"] == str(path)
    json_path = CohortStore(out).json_path(str(path))
    if REAL_FILES[name]:
        assert row["probability"] == "" and row["error"].startswith(f"{path}: ")
        assert REAL_FILES[name] in row["error"] and "\n" not in row["error"]
        assert not json_path.exists()
        return
    assert not row["error"] and 0 < float(row["probability"]) < 1
    with open_slide(path) as slide:
        size = slide.dimensions
    _check_slide_json(json.loads(json_path.read_text()), size)


def test_explain_reads_each_real_format(checkpoint: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if not SHARED_SLIDES.exists():
        pytest.skip(SHARED_REASON)
    files = [str(SHARED_SLIDES / name) for name in sorted(REAL_FILES)]
    with one_thread():
        code = main(["explain", str(checkpoint), *files, "--out", str(tmp_path / "explain"),
                     "--thumbnail-size", "64"])
    assert code == (1 if any(REAL_FILES.values()) else 0)
    err = capsys.readouterr().err
    for name, reason in REAL_FILES.items():
        report = tmp_path / "explain" / Path(name).stem / "report.html"
        if reason:
            assert f"{SHARED_SLIDES / name}: error: " in err and reason in err and not report.exists()
        else:
            assert report.is_file() and (report.parent / "rois.geojson").is_file()
    assert "Traceback" not in err


def test_a_virtual_slide_exported_to_tiff_is_predicted_and_explained(checkpoint: Path,
                                                                     tmp_path: Path) -> None:
    uri = "synth:seed=6,size=4096x3072,lesion=negative"
    tiff = tmp_path / "virtual.tif"
    assert main(["synth", "export", uri, str(tiff)]) == 0
    out = tmp_path / "out"
    with one_thread():
        assert main(["predict", str(checkpoint), str(tmp_path), "--out", str(out), "--no-progress"]) == 0
        assert main(["explain", str(checkpoint), str(tiff), "--out", str(tmp_path / "explain"),
                     "--thumbnail-size", "64"]) == 0
    obj = json.loads(CohortStore(out).json_path(str(tiff)).read_text())
    _check_slide_json(obj, (4096, 3072))
    assert obj["mpp"] == pytest.approx(0.25, rel=1e-3)  # the export keeps the pixel size
    assert (tmp_path / "explain" / "virtual" / "report.html").is_file()
