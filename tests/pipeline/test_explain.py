"""``magnet explain``: ROI figure, patch strip, GeoJSON for QuPath and HTML reports per slide, an index, and
bad input (a missing checkpoint or slide is one line, exit 2; one bad slide among several is reported)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from pipeline_fixtures import PATCHES, one_line_error, one_thread

from magnet.cli import main
from magnet.data.manifest import read_manifest
from magnet.explain import explain_slide, safe_slide_name
from magnet.explain.explainer import _unique
from magnet.explain.geojson import roi_features
from magnet.explain.palette import layer_colour
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_PER_LAYER = [math.prod(PATCHES[: i + 1]) for i in range(len(PATCHES))]


def test_explain_slide_writes_figures_geojson_and_report(run, tmp_path: Path, tiny_tiff,  # type: ignore[no-untyped-def]
                                                         make_image) -> None:
    _, result = run
    # A non-square slide: its ROIs may reach into the canvas padding, and the thumbnail scales per axis.
    tiff, _ = tiny_tiff("small.tif", make_image(512, 384), levels=3, compression="zlib", mpp=0.5)
    model, config = load_model(result.run_dir / "best.ckpt")
    pool = SlidePool(grey_filter=config.data.grey_filter, threads=1)
    try:
        reader = pool.get(str(tiff))
        with one_thread():
            explained = explain_slide(model, reader, str(tiff), tmp_path / "small", thumbnail_size=256)
            with torch.no_grad():
                reference = model([reader])  # eval mode: the same boxes and probability
    finally:
        pool.close()

    assert explained.ok and not model.training
    assert explained.probability == pytest.approx(float(torch.sigmoid(reference.logit[0])), abs=1e-6)
    assert explained.running_probabilities[-1] == pytest.approx(explained.probability, abs=1e-6)
    assert len(explained.running_probabilities) == N_PER_LAYER[-1]
    for role in ("rois_png", "patches_png"):
        path = explained.files[role]
        assert path.parent == tmp_path / "small" and path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(explained.files["rois_png"]) as image:
        # The thumbnail's size (the slide is wider than tall): boxes are drawn on it, not around it; the name,
        # scale bar and legend sit in a band below it.
        assert image.size[0] <= 256 + 1

    collection = json.loads(explained.files["geojson"].read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == sum(N_PER_LAYER)
    for layer, boxes in enumerate(reference.boxes_level0, start=1):
        mine = [f for f in features if f["properties"]["layer"] == layer]
        assert [f["properties"]["index"] for f in mine] == list(range(N_PER_LAYER[layer - 1]))
        for feature, box in zip(mine, boxes[0].tolist(), strict=True):
            x0, y0, x1, y1 = box
            assert feature["geometry"]["type"] == "Polygon"
            assert feature["geometry"]["coordinates"] == [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]
            props = feature["properties"]
            assert props["objectType"] == "annotation"
            assert props["classification"] == {"name": f"layer {layer}", "color": list(layer_colour(layer))}

    page = explained.files["report"].read_text()
    assert f"{explained.probability:.3f}" in page and str(tiff) in page
    assert 'src="rois.png"' in page and 'src="patches.png"' in page and 'href="rois.geojson"' in page
    assert page.count("<tr>") == 2 + sum(N_PER_LAYER)  # legend's and regions' headers + one row per ROI
    assert page.count('<tr class="layer-key"') == len(N_PER_LAYER)  # the legend: one row per layer


def test_geojson_keeps_boxes_outside_the_slide_and_numbers_parents() -> None:
    boxes = [[[-10.0, -5.0, 50.0, 55.0], [20.0, 20.0, 30.0, 30.0]],
             [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0], [5.0, 5.0, 9.5, 9.5]]]
    features = roi_features(boxes, [0.1, 0.2, 0.3, 0.4])["features"]
    assert features[0]["geometry"]["coordinates"][0][0] == [-10.0, -5.0]  # not clipped to the slide
    assert [f["properties"]["parent"] for f in features] == [-1, -1, 0, 0, 1, 1]
    assert [f["properties"].get("running_probability") for f in features] == [None, None, 0.1, 0.2, 0.3, 0.4]


def test_safe_slide_names_are_unique_folder_names(tmp_path: Path) -> None:
    slide = tmp_path / "a b" / "CMU-1.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"")
    assert safe_slide_name(str(slide)) == "CMU-1"
    assert safe_slide_name("synth:seed=3,size=64x64,lesion=itc") == "synth_seed_3_size_64x64_lesion_itc"
    assert safe_slide_name("../..") == "slide"
    taken = {"index.html"}
    assert [_unique(n, taken) for n in ("x", "X", "x", "index.html")] == ["x", "X-2", "x-3", "index.html-2"]


def test_cli_explains_the_good_slides_and_reports_the_bad_one(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    uri = next(r.slide for r in read_manifest(cfg.data.manifest, check_slides=False).rows)
    missing = tmp_path / "missing.svs"
    out = tmp_path / "explain"
    with one_thread():
        code = main(["explain", str(result.run_dir / "best.ckpt"), uri, str(missing), "--out", str(out),
                     "--thumbnail-size", "128"])
    assert code == 1
    captured = capsys.readouterr()
    folder = out / safe_slide_name(uri)
    assert str(folder / "report.html") in captured.out and str(out / "index.html") in captured.out
    assert f"{missing}: error:" in captured.err and "no such file" in captured.err
    for name in ("rois.png", "patches.png", "rois.geojson", "report.html"):
        assert (folder / name).is_file()
    assert [p.name for p in out.iterdir() if p.is_dir()] == [folder.name]  # nothing for the bad slide
    index = (out / "index.html").read_text()
    assert f'href="{folder.name}/report.html"' in index and "no such file" in index
    p = json.loads((folder / "rois.geojson").read_text())["features"][-1]["properties"]["running_probability"]
    assert f"{p:.3f}" in index


def test_cli_missing_slide_or_checkpoint_is_one_line_exit_2(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, result = run
    missing, out = tmp_path / "missing.svs", str(tmp_path / "o")
    assert main(["explain", str(result.run_dir / "best.ckpt"), str(missing), "--out", out]) == 2
    assert str(missing) in one_line_error(capsys)
    no_ckpt = tmp_path / "nope.ckpt"
    assert main(["explain", str(no_ckpt), str(missing), "--out", out]) == 2
    err = one_line_error(capsys)
    assert str(no_ckpt) in err and "no such checkpoint" in err
