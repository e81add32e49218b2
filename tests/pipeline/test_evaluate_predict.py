"""``magnet evaluate`` (Table-1 metrics, predictions, ROC) and ``magnet predict`` (probability and level-0
ROIs per slide, on virtual slides and on slide files) from the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from pipeline_fixtures import PATCHES, one_thread

from magnet.cli import main
from magnet.data.manifest import read_manifest

SHARED_SLIDES = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides"
SHARED_SVS = SHARED_SLIDES / "CMU-1-Small-Region.svs"


def test_evaluate_writes_table1_json_predictions_and_roc(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    out = tmp_path / "eval"
    with one_thread():
        code = main(["evaluate", str(result.run_dir / "best.ckpt"), cfg.data.manifest, "--split", "test",
                     "--out", str(out), "--bootstrap", "20"])
    assert code == 0
    printed = capsys.readouterr().out
    for title in ("Macro", "Micro", "ITC", "All"):
        assert title in printed
    assert str(out) in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"macro", "micro", "itc", "macro_micro", "all", "n_slides"} <= set(metrics)
    test_rows = [r for r in read_manifest(cfg.data.manifest, check_slides=False).rows if r.split == "test"]
    assert metrics["n_slides"] == len(test_rows) == 6
    for key, n_pos in (("macro", 1), ("micro", 1), ("itc", 1), ("macro_micro", 2), ("all", 3)):
        assert metrics[key]["n_pos"] == n_pos and metrics[key]["n_neg"] == 3
        assert 0.0 <= metrics[key]["auroc"] <= 1.0

    with (out / "predictions.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        preds = list(reader)
    assert {"slide", "probability", "label", "class"} <= set(reader.fieldnames or ())
    assert [p["slide"] for p in preds] == [r.slide for r in test_rows]
    assert [int(p["label"]) for p in preds] == [r.label for r in test_rows]
    assert [p["class"] for p in preds] == [r.lesion_class for r in test_rows]
    assert all(0.0 < float(p["probability"]) < 1.0 for p in preds)
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_prediction(obj: dict, slide: str, size: tuple[int, int]) -> None:  # type: ignore[type-arg]
    assert obj["slide"] == slide and not obj["error"]
    assert 0.0 < obj["probability"] < 1.0 and obj["seconds"] > 0
    layers = obj["layers"]
    assert [len(boxes) for boxes in layers] == [math.prod(PATCHES[: i + 1]) for i in range(len(PATCHES))]
    for boxes in layers:
        for x0, y0, x1, y1 in boxes:
            assert x0 < x1 and y0 < y1
    # Every ROI is a square of the slide's square canvas (side L = max(W, H), centred on the slide,
    # magnet.geometry): its centre lies on the canvas; its zoom s = sqrt(1.5 E||x - mu||^2) is <= sqrt(3).
    side, (w, h) = max(size), size
    for boxes in layers:
        for x0, y0, x1, y1 in boxes:
            assert x1 - x0 == pytest.approx(y1 - y0, rel=1e-4) and x1 - x0 <= side * 3**0.5
            assert abs((x0 + x1) / 2 - w / 2) <= side / 2 + 1 and abs((y0 + y1) / 2 - h / 2) <= side / 2 + 1


def test_predict_json_on_a_virtual_slide_and_a_tiff(run, tmp_path: Path, tiny_tiff,  # type: ignore[no-untyped-def]
                                                    make_image, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    uri = next(r.slide for r in read_manifest(cfg.data.manifest, check_slides=False).rows)
    tiff, _ = tiny_tiff("small.tif", make_image(512, 384), levels=3, compression="zlib", mpp=0.5)
    with one_thread():
        code = main(["predict", str(result.run_dir / "best.ckpt"), uri, str(tiff)])
    assert code == 0
    objs = json.loads(capsys.readouterr().out)  # without --out: the JSON list on standard output
    assert len(objs) == 2
    _check_prediction(objs[0], uri, (32768, 32768))
    _check_prediction(objs[1], str(tiff), (512, 384))


@pytest.mark.skipif(not SHARED_SVS.exists(), reason=f"real slide {SHARED_SVS} is absent (beside the repo)")
def test_predict_on_a_real_svs(run, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    _, result = run
    with one_thread():
        code = main(["predict", str(result.run_dir / "best.ckpt"), str(SHARED_SVS)])
    assert code == 0
    captured = capsys.readouterr()
    objs = json.loads(captured.out)
    from magnet.slides.registry import open_slide

    with open_slide(SHARED_SVS) as slide:
        size = slide.dimensions
    _check_prediction(objs[0], str(SHARED_SVS), size)
    assert "p=" in captured.err  # the one-line summary per slide


def test_predict_reports_an_unreadable_slide_and_goes_on(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, result = run
    missing = tmp_path / "missing.svs"
    with one_thread():
        code = main(["predict", str(result.run_dir / "best.ckpt"), str(missing)])
    assert code == 1
    captured = capsys.readouterr()
    obj = json.loads(captured.out)[0]
    assert obj["slide"] == str(missing) and "no such file" in obj["error"] and obj["layers"] == []
    assert f"{missing}: error:" in captured.err


def test_evaluate_reports_localisation_when_the_manifest_names_lesion_outlines(  # type: ignore[no-untyped-def]
        run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from magnet.synth.dataset import make_dataset, write_dataset

    cfg, result = run
    slides = [s for s in make_dataset(12, 5, size=(32768, 32768)) if s.split in ("train", "test")][:8]
    manifest = write_dataset(slides, tmp_path / "data")
    out = tmp_path / "eval"
    with one_thread():
        assert main(["evaluate", str(result.run_dir / "best.ckpt"), str(manifest), "--out", str(out),
                     "--bootstrap", "10"]) == 0
    printed = capsys.readouterr().out
    assert "hit rate" in printed and "at cellular resolution" in printed and "um/px" in printed
    loc = json.loads((out / "metrics.json").read_text())["localisation"]
    assert loc["n_slides"] == len(slides) and loc["n_all"] == sum(s.label for s in slides)
    assert 0.0 < loc["mean_patch_side_fraction"] <= 3**0.5
    # Virtual slides say their pixel size (0.25 um), so the final patches' resolution is known.
    assert loc["final_um_per_px"] == pytest.approx(loc["mean_patch_side"] * 0.25 / cfg.model.final_size)
    # Drawn by the sampler from their parents' reads, the patches hold no finer detail than their pixels.
    assert loc["final_detail_um_per_px"] >= loc["final_um_per_px"] * (1 - 1e-9)
    if loc["n_all"]:
        assert 0.0 <= loc["hit_rate_all"] <= 1.0 and 0.0 <= loc["lesion_share_all"] <= 1.0
    # Without outlines (the base manifest has no `lesions` column) there is nothing to localise against.
    plain = tmp_path / "plain"
    with one_thread():
        assert main(["evaluate", str(result.run_dir / "best.ckpt"), cfg.data.manifest, "--out", str(plain),
                     "--bootstrap", "10"]) == 0
    assert json.loads((plain / "metrics.json").read_text())["localisation"] is None
