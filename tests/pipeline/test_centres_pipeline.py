"""Training with stain augmentation and evaluation by centre, end to end on the tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pipeline_fixtures import one_thread, tiny_config

from magnet.cli import main
from magnet.data.manifest import read_manifest, write_manifest
from magnet.slides.colour import ColourJitter, JitteredSource
from magnet.training import colour_augment
from magnet.training.loop import train

AUGMENT = ("data.colour.hed_scale=0.2", "data.colour.hed_shift=0.05", "data.colour.brightness=0.1",
           "data.colour.saturation=0.1", "optim.epochs=2")
_WRAP = colour_augment.SlideJitters.wrap  # the real one, before any test patches it


def _recorded_train(monkeypatch: pytest.MonkeyPatch, manifest: Path, folder: Path,
                    *overrides: str) -> tuple[list[tuple[int, int, ColourJitter]], list[dict[str, Any]]]:
    """Train, recording every (slide id, epoch, draw) the training loop wrapped a source in."""
    seen: list[tuple[int, int, ColourJitter]] = []

    def recording(self: colour_augment.SlideJitters, sources: Any, ids: Any, epoch: int) -> list[Any]:
        wrapped = _WRAP(self, sources, ids, epoch)
        seen.extend((i, epoch, w.jitter) for i, w in zip(ids, wrapped, strict=True)
                    if isinstance(w, JitteredSource))
        return wrapped

    monkeypatch.setattr(colour_augment.SlideJitters, "wrap", recording)
    cfg = tiny_config(manifest, *overrides, folder=folder)
    with one_thread():
        result = train(cfg, folder / "run", show_progress=False)
    return seen, result.history


def test_augmented_training_draws_once_per_slide_and_epoch_reproducibly(
        run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cfg, _ = run
    manifest = Path(cfg.data.manifest)
    first, history = _recorded_train(monkeypatch, manifest, tmp_path / "a", *AUGMENT)
    again, history_again = _recorded_train(monkeypatch, manifest, tmp_path / "b", *AUGMENT)
    n_train = sum(r.split == "train" for r in read_manifest(manifest, check_slides=False).rows)
    assert len(first) == 2 * n_train  # every training slide once per epoch
    assert sorted((i, e) for i, e, _ in first) == sorted({(i, e) for i, e, _ in first})
    draws = {(i, e): d for i, e, d in first}
    assert len({d for d in draws.values()}) == len(draws)  # other slides, other epochs: other draws
    assert all(not d.is_identity and 0.8 <= min(d.hed_scale) <= max(d.hed_scale) <= 1.2
               for d in draws.values())
    assert first == again and history[-1]["train_loss"] == history_again[-1]["train_loss"]  # from the seed
    off, _ = _recorded_train(monkeypatch, manifest, tmp_path / "off", "optim.epochs=1")
    assert off == []  # off by default: the sources are the pool's


def test_evaluate_reports_auroc_per_centre(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    rows = [r for r in read_manifest(cfg.data.manifest, check_slides=False).rows if r.split == "test"]
    # The same test slides listed twice: once as centre "a", once at the purple centre as "b".
    rows = [type(r)(r.slide, r.label, r.lesion_class, r.split, r.patient, {**r.extra, "centre": "a"})
            for r in rows] + [
        type(r)(r.slide + ",centre=purple", r.label, r.lesion_class, r.split, r.patient,
                {**r.extra, "centre": "b"}) for r in rows]
    manifest = tmp_path / "centres.csv"
    write_manifest(rows, manifest)
    out = tmp_path / "eval"
    with one_thread():
        code = main(["evaluate", str(result.run_dir / "best.ckpt"), str(manifest), "--out", str(out),
                     "--bootstrap", "0", "--stain-norm", "reinhard"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "centre a (6 slides)" in printed and "centre b (6 slides)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_centre"]) == {"a", "b"}
    for centre in ("a", "b"):
        entry = metrics["by_centre"][centre]
        assert entry["n_slides"] == 6 and entry["all"]["n_pos"] == 3 and 0 <= entry["all"]["auroc"] <= 1


def test_predict_normalises_stain_when_asked(run, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    cfg, result = run
    uri = next(r.slide for r in read_manifest(cfg.data.manifest, check_slides=False).rows) + ",centre=dark"
    probabilities = {}
    for norm in ("none", "reinhard"):
        with one_thread():
            assert main(["predict", str(result.run_dir / "best.ckpt"), uri, "--stain-norm", norm]) == 0
        (obj,) = json.loads(capsys.readouterr().out)
        assert not obj["error"] and 0.0 < obj["probability"] < 1.0
        probabilities[norm] = obj["probability"]
    assert probabilities["none"] != probabilities["reinhard"]  # the model saw other colours
    assert main(["predict", str(result.run_dir / "best.ckpt"), uri, "--stain-norm", "macenko"]) == 2
    assert "invalid choice: 'macenko'" in capsys.readouterr().err
