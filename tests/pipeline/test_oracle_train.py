"""Oracle zoom end to end (a zoom control, docs/method.md §8): a tiny run with model.zoom=oracle on virtual
slides with lesion outlines writes the zoom diagnostics, evaluates with every final patch on the lesions, and
refuses to start (or to predict) without outlines, in one line."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest
from pipeline_fixtures import dataset, one_line_error, one_thread, tiny_config

from magnet.cli import main
from magnet.errors import ConfigError
from magnet.evaluation.evaluate import evaluate
from magnet.synth.dataset import make_dataset, write_dataset
from magnet.training.diagnostics import diagnostic_fields
from magnet.training.loop import Trainer, train
from magnet.training.run_log import METRIC_FIELDS


def outlined_dataset(folder: Path) -> Path:
    """12 virtual slides with a `lesions` column: train 3+3, validation 1+1, test 2+2."""
    slides = make_dataset(28, 11, size=(32768, 32768))
    pos = [s for s in slides if s.label == 1]
    neg = [s for s in slides if s.label == 0]
    plan = [("train", pos[:3] + neg[:3]), ("validation", pos[3:4] + neg[3:4]), ("test", pos[4:6] + neg[4:6])]
    return write_dataset([replace(s, split=split) for split, members in plan for s in members], folder)


def test_oracle_run_writes_diagnostics_and_evaluates_on_the_lesions(  # type: ignore[no-untyped-def]
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = outlined_dataset(tmp_path / "data")
    cfg = tiny_config(manifest, "model.zoom=oracle", "optim.epochs=1", folder=tmp_path)
    with one_thread():
        result = train(cfg, tmp_path / "oracle", show_progress=False)
    with (result.run_dir / "metrics.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        (row,) = list(reader)
    assert tuple(reader.fieldnames or ()) == METRIC_FIELDS + diagnostic_fields(3)
    assert int(row["val_n"]) == 2 and math.isfinite(float(row["train_loss"]))
    for layer in (1, 2, 3):
        assert 0.0 < float(row[f"tissue_share_layer{layer}"]) <= 1.0
        assert 0.0 <= float(row[f"lesion_share_layer{layer}"]) <= 1.0
    # The oracle's final ROIs sit on the lesions; the fixed layout of layers 1-2 barely does.
    assert float(row["lesion_share_layer3"]) > max(float(row["lesion_share_layer1"]), 0.05)
    assert float(row["mean_s_layer3"]) > 0

    with one_thread():
        metrics = evaluate(result.run_dir / "best.ckpt", manifest, tmp_path / "eval", split="test",
                           n_bootstrap=10, show_progress=False).metrics
    loc = metrics["localisation"]
    assert loc["n_all"] == 2 and loc["hit_rate_all"] == 1.0
    assert loc["mean_patch_side_fraction"] == pytest.approx(cfg.model.oracle_side)

    # magnet predict has no outlines: one line naming the checkpoint and the reason.
    with one_thread():
        code = main(["predict", str(result.run_dir / "best.ckpt"), "synth:seed=1,size=8192x8192"])
    assert code == 2
    err = one_line_error(capsys)
    assert "best.ckpt" in err and "zoom=oracle" in err and "outlines" in err
    # magnet explain has no learned zoom to show: one line too, and nothing written.
    with one_thread():
        code = main(["explain", str(result.run_dir / "best.ckpt"), "synth:seed=1,size=8192x8192",
                     "--out", str(tmp_path / "explain")])
    assert code == 2
    err = one_line_error(capsys)
    assert "best.ckpt" in err and "zoom=oracle" in err
    assert not (tmp_path / "explain" / "index.html").exists()


def test_oracle_without_outlines_is_a_one_line_config_error(tmp_path: Path) -> None:
    manifest = dataset(tmp_path / "data")  # the shared manifest: no `lesions` column
    cfg = tiny_config(manifest, "model.zoom=oracle", folder=tmp_path)
    with pytest.raises(ConfigError, match="zoom=oracle places the final patches on lesion outlines") as info:
        Trainer(cfg, tmp_path / "run", show_progress=False)
    assert "\n" not in str(info.value) and str(manifest) in str(info.value)


def test_oracle_on_lookalikes_reads_the_manifests_lookalike_outlines(tmp_path: Path) -> None:
    manifest = outlined_dataset(tmp_path / "data")
    cfg = tiny_config(manifest, "model.zoom=oracle", "model.oracle_negatives=lookalikes", folder=tmp_path)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    negatives = [r.slide for r in trainer.train_rows + trainer.val_rows if r.label == 0]
    assert negatives and all(len(trainer.oracle.lookalikes[name]) > 0 for name in negatives)
    trainer.folder.release()
