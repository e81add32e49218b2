"""Bad input to train / evaluate: each a one-line ``magnet: error:`` naming the file or
key, exit status 2; a slide failing mid-training is logged and skipped; Ctrl-C keeps the last checkpoint."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import (
    FailingReads,
    balanced_rows,
    one_line_error,
    one_thread,
    temp_files,
    tiny_config,
    write_recipe,
)

import magnet.training.checkpoints
import magnet.training.loop
from magnet.cli import main
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.slides.registry import register_scheme
from magnet.training.checkpoints import save_checkpoint
from magnet.training.loop import Trainer


def test_unknown_recipe_key_names_the_file_and_key(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    recipe = write_recipe(tmp_path / "typo.yaml", cfg.data.manifest, optim={"epoch": 3})
    assert main(["train", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert str(recipe) in err and "'optim.epoch'" in err and "'epochs'" in err  # with the suggestion
    assert not (tmp_path / "out").exists()


def test_impossible_device_setting_is_one_line(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)
    assert main(["train", str(recipe), "--set", "precision=banana", "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "precision=banana" in err and "invalid" in err


def test_training_split_without_positives(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    rows = [r for r in balanced_rows() if r.split != "train" or r.label == 0]
    manifest = tmp_path / "negatives.csv"
    write_manifest(rows, manifest)
    recipe = write_recipe(tmp_path / "tiny.yaml", manifest)
    assert main(["train", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert str(manifest) in err and "no positives" in err


def folder_with_checkpoint(cfg, result, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A new run folder holding a copy of the base run's last checkpoint, and the tiny recipe."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(result.run_dir / "last.ckpt", out / "last.ckpt")
    return out, write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)


def test_resume_with_another_model_config(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    out, recipe = folder_with_checkpoint(cfg, result, tmp_path)
    code = main(["train", str(recipe), "--out", str(out), "--resume", "--set", "model.gru_hidden=16"])
    assert code == 2
    err = one_line_error(capsys)
    assert str(out / "last.ckpt") in err and "model.gru_hidden" in err and "another model config" in err


def test_train_into_a_folder_holding_a_checkpoint_needs_resume(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    out, recipe = folder_with_checkpoint(cfg, result, tmp_path)
    before = (out / "last.ckpt").read_bytes()
    assert main(["train", str(recipe), "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "--resume" in err
    assert (out / "last.ckpt").read_bytes() == before


@pytest.mark.parametrize("content", [b"not a checkpoint at all\n", "torch-dict"])
def test_evaluate_on_a_file_that_is_not_a_checkpoint(run, tmp_path: Path, content,  # type: ignore[no-untyped-def]
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    fake = tmp_path / "model.ckpt"
    if content == "torch-dict":
        torch.save({"weights": torch.zeros(2)}, fake)  # a readable torch file, but not ours
    else:
        fake.write_bytes(content)
    assert main(["evaluate", str(fake), cfg.data.manifest, "--out", str(tmp_path / "eval")]) == 2
    err = one_line_error(capsys)
    assert str(fake) in err and "checkpoint" in err
    assert not (tmp_path / "eval").exists()


def test_a_slide_failing_mid_training_is_logged_and_skipped(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    register_scheme("pipelinefailing", FailingReads)
    png = tmp_path / "tile.png"
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(png)
    good = [r for r in balanced_rows() if r.split == "train"]
    rows = [*good[:2], *good[-2:], ManifestRow(str(png), 1, "macro", "train"),
            ManifestRow("pipelinefailing:slide-7", 0, "negative", "train")]
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    cfg = tiny_config(manifest, "optim.epochs=1", "optim.batch_size=1", "data.val_split=''",
                      "data.max_failed_share=0.5")
    with one_thread():
        trainer = Trainer(cfg, tmp_path / "run", show_progress=False)  # validates the manifest: all fine
        png.unlink()  # ... then the PNG disappears before training reads it
        result = trainer.fit()
    assert not result.interrupted and result.epochs_done == 1
    row = result.history[0]
    assert row["skipped_batches"] == 2 and row["failed_slides"] == 2 and np.isfinite(row["train_loss"])
    out = capsys.readouterr().out
    assert out.count(f"skipping train slide from now on: {png}: no such file") == 1
    assert out.count("skipping train slide from now on: pipelinefailing:slide-7: tile 3 is truncated") == 1
    assert "epoch 1: 2 of 6 train slides skipped (unreadable)" in out
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_ctrl_c_keeps_the_last_checkpoint(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest, optim={"epochs": 2},
                          data={"val_split": ""})
    real_loss, calls = magnet.training.loop.magnet_loss, [0]
    batches_per_epoch = 2  # 8 training slides, batch 4

    def interrupting_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == batches_per_epoch + 2:  # second step of epoch 2: Ctrl-C
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(magnet.training.loop, "magnet_loss", interrupting_loss)
    out = tmp_path / "run"
    with one_thread():
        code = main(["train", str(recipe), "--out", str(out), "--no-progress"])
    assert code == 130
    assert "interrupted during epoch 2" in capsys.readouterr().out
    payload = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert payload["epoch"] == 1 and len(payload["history"]) == 1
    magnet.training.checkpoints.load_model(out / "last.ckpt")
    with (out / "metrics.csv").open(newline="") as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1"]
    assert temp_files(out) == []


def test_interrupted_checkpoint_write_keeps_the_old_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"epoch": 1})

    def dying_save(obj, handle):  # type: ignore[no-untyped-def]
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(magnet.training.checkpoints.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
