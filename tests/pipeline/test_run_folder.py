"""A run folder has one owner, and --resume continues the same run unless told otherwise.

Each refusal is one ``magnet: error:`` line naming the folder or checkpoint and the reason, and leaves the
folder as it was. The base run (3 epochs, done) is resumed with its own epoch count, so a resume that is
accepted trains nothing and costs a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from pipeline_fixtures import balanced_rows, one_line_error, one_thread, write_recipe

from magnet.cli import main
from magnet.data.manifest import write_manifest
from magnet.training.run_folder import HISTORY_FILE, LOCK_FILE


def folder_with_checkpoint(cfg, result, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A new run folder holding a copy of the base run's last checkpoint, and the tiny recipe."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(result.run_dir / "last.ckpt", out / "last.ckpt")
    return out, write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)


# (override of the resumed run, fragment of the refusal): what the run learns may not change silently.
RESUME_CHANGES = [
    ("optim.lr=1e-3", "optim.lr: 0.0003 -> 0.001"),
    ("seed=8", "seed: 7 -> 8"),
    ("optim.batch_size=2", "optim.batch_size: 4 -> 2"),
    ("optim.epochs=5", "optim.epochs: 3 -> 5"),
    ("loss.aux=0.5", "loss.aux:"),
    ("data.augment=false", "data.augment: True -> False"),
    ("data.val_split=test", "data.val_split: 'validation' -> 'test'"),
]


@pytest.mark.parametrize(("override", "fragment"), RESUME_CHANGES)
def test_resume_with_a_changed_config_is_refused(run, tmp_path: Path, override: str, fragment: str,  # type: ignore[no-untyped-def]
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    out, recipe = folder_with_checkpoint(cfg, result, tmp_path)
    before = (out / "last.ckpt").read_bytes()
    assert main(["train", str(recipe), "--out", str(out), "--resume", "--set", override]) == 2
    err = one_line_error(capsys)
    assert f"{out / 'last.ckpt'}: resuming with a changed config" in err and fragment in err
    assert "--allow-changes" in err
    assert (out / "last.ckpt").read_bytes() == before and not (out / "config.yaml").exists()
    assert not (out / HISTORY_FILE).exists()


def test_resume_with_other_training_rows_is_refused(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    out, _ = folder_with_checkpoint(cfg, result, tmp_path)
    rows = balanced_rows()
    rows.remove(next(r for r in rows if r.split == "train"))
    manifest = tmp_path / "fewer.csv"
    write_manifest(rows, manifest)
    recipe = write_recipe(tmp_path / "fewer.yaml", manifest)
    assert main(["train", str(recipe), "--out", str(out), "--resume"]) == 2
    err = one_line_error(capsys)
    assert "train rows: '8 rows, " in err and "-> '7 rows, " in err


def test_resume_with_allowed_changes_is_recorded(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg, result = run
    out, recipe = folder_with_checkpoint(cfg, result, tmp_path)
    with one_thread():  # hardware and reader keys change freely; the run is complete, nothing trains
        assert main(["train", str(recipe), "--out", str(out), "--resume", "--no-progress",
                     "--set", "data.reader_threads=2", "--set", "devices=1"]) == 0
        assert main(["train", str(recipe), "--out", str(out), "--resume", "--allow-changes", "--no-progress",
                     "--set", "optim.lr=1e-3"]) == 0
    history = [json.loads(line) for line in (out / HISTORY_FILE).read_text().splitlines()]
    assert [h["event"] for h in history] == ["resume", "resume with changes"]
    assert history[1]["changes"] == {"optim.lr": [0.0003, 0.001]} and history[1]["epoch"] == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.001


def test_allow_changes_without_resume_is_refused(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--allow-changes"]) == 2
    assert "--allow-changes: only meaningful with --resume" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_second_run_on_a_locked_folder_is_refused(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / LOCK_FILE, timeout=0):  # the first run, still training
        assert main(["train", str(recipe), "--out", str(out)]) == 2
        err = one_line_error(capsys)
    assert f"{out}: another magnet run is using this folder" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing of the second run


def test_a_run_that_fails_before_writing_leaves_no_folder(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = run
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in one_line_error(capsys)
    assert not out.exists()
