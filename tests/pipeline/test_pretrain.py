"""``magnet pretrain``: a cell encoder learned on a recipe's patches with no label, then trained on as the
classifier's frozen CNN; an unreadable slide is named and left out; a user mistake is one line and writes
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pipeline_fixtures import (
    FailingReads,
    balanced_rows,
    dataset,
    one_line_error,
    one_thread,
    temp_files,
    write_recipe,
)

from magnet.cli import main
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.errors import MagnetError
from magnet.models.cell_encoder import ENCODER_FILE_KIND, CellEncoder
from magnet.slides.registry import register_scheme
from magnet.training.checkpoints import load_checkpoint
from magnet.training.contrastive import ContrastiveSettings
from magnet.training.pretrain import write_encoder_file

register_scheme("pretrainfails", FailingReads)

CELL_ENCODER = ["--set", "model.backbone=cell_encoder", "--set", "model.pretrained=true",
                "--set", "model.freeze_backbone=true"]


def test_pretrain_then_train_on_the_frozen_encoder(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.csv"
    write_manifest([*balanced_rows(), ManifestRow("pretrainfails:0", 1, None, "train")], manifest)
    recipe = write_recipe(tmp_path / "tiny.yaml", manifest)
    encoder = tmp_path / "encoder.pt"
    with one_thread():
        assert main(["pretrain", str(recipe), "--out", str(encoder), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "skipped pretrainfails:0: tile 3 is truncated (test)" in out
    # 8 readable training slides of the tiny tree: 8 final patches each, at the classifier's 64 px
    assert "cell encoder: 64 patches of 8 slides at 64 px, 1 unreadable slide(s) left out" in out
    saved = torch.load(encoder, weights_only=True)
    assert saved["kind"] == ENCODER_FILE_KIND and saved["patch_px"] == 64 and saved["slides"] == 8

    run = tmp_path / "run"
    with one_thread():
        assert main(["train", str(recipe), "--out", str(run), "--no-progress", "--set", "optim.epochs=1",
                     "--set", f"data.manifest={dataset(tmp_path / 'data')}", *CELL_ENCODER,
                     "--set", f"model.backbone_weights={encoder}", "--set", "model.aux_layers=[]"]) == 0
    trained = load_checkpoint(run / "last.ckpt")["model"]
    prefix = "classifier.backbone.encoder."
    for key, value in saved["state_dict"].items():  # frozen: the encoder as pre-trained, statistics too
        assert torch.equal(trained[prefix + key], value), key


def test_pretrain_without_training_slides_is_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.csv"
    write_manifest([r for r in balanced_rows() if r.split != "train"], manifest)
    recipe = write_recipe(tmp_path / "tiny.yaml", manifest)
    assert main(["pretrain", str(recipe), "--out", str(tmp_path / "encoder.pt")]) == 2
    assert f"{manifest}: no slide of split 'train' to pre-train on" in one_line_error(capsys)
    assert sorted(tmp_path.iterdir()) == sorted([manifest, recipe])


def test_pretrain_into_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path / "tiny.yaml", dataset(tmp_path / "data"))
    assert main(["pretrain", str(recipe), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder; give the name of a file to write" in one_line_error(capsys)


def test_an_unwritable_weights_file_is_one_line_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.csv"  # a slide that cannot be read: reached, it would be named
    write_manifest([*balanced_rows(), ManifestRow("pretrainfails:0", 1, None, "train")], manifest)
    recipe = write_recipe(tmp_path / "tiny.yaml", manifest)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["pretrain", str(recipe), "--out", str(blocker / "encoder.pt"), "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the slides were read: pretrain names a skipped slide there
    target = blocker / "encoder.pt"
    reason = f"cannot write here: {blocker} is a file, not a folder"
    assert captured.err.strip() == f"magnet: error: {target}: {reason}"
    assert not temp_files(tmp_path)


def test_an_encoder_file_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(MagnetError, match=f"{blocker / 'encoder.pt'}: cannot write the encoder \\("):
        write_encoder_file(CellEncoder(), blocker / "encoder.pt", patch_px=32, slides=1,
                           settings=ContrastiveSettings(steps=1))
    assert not temp_files(tmp_path)


def test_training_on_a_missing_encoder_file_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path / "tiny.yaml", dataset(tmp_path / "data"))
    missing = tmp_path / "missing.pt"
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), *CELL_ENCODER,
                 "--set", f"model.backbone_weights={missing}"]) == 2
    assert f"{missing}: no such cell-encoder weights file" in one_line_error(capsys)
    assert not (tmp_path / "run" / "last.ckpt").exists()
