"""Bad slides are counted, shown and survived: in training (warm-up included), validation, evaluate, predict.

The failing slides are a test scheme that opens (so manifests validate) but fails every pixel read, as a
truncated file does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pipeline_fixtures import FailingReads, balanced_rows, one_thread, temp_files, tiny_config

from magnet.cli import main
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.errors import MagnetError
from magnet.slides.registry import register_scheme
from magnet.training.loop import Trainer


class _InterruptingReads(FailingReads):
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        raise KeyboardInterrupt


register_scheme("badslides", FailingReads)
register_scheme("interrupting", _InterruptingReads)


def manifest_with_failures(tmp_path: Path, n_failing: int, *, split: str = "train") -> Path:
    rows = [*balanced_rows()]
    rows += [ManifestRow(f"badslides:{i}", i % 2, None, split) for i in range(n_failing)]
    path = tmp_path / "manifest.csv"
    write_manifest(rows, path)
    return path


def test_a_failing_slide_leaves_its_batch_training_and_is_logged_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = [r for r in balanced_rows() if r.split == "train"]
    readable = [next(r for r in train if r.label == 0), next(r for r in train if r.label == 1)]
    manifest = tmp_path / "manifest.csv"
    write_manifest([*readable, ManifestRow("badslides:0", 1, None, "train")], manifest)
    cfg = tiny_config(manifest, "optim.epochs=2", "optim.batch_size=3", "data.val_split=''",
                      "data.max_failed_share=0.5")
    with one_thread():
        result = Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    for row in result.history:  # one batch of 3 per epoch: the 2 readable slides trained in it
        assert row["skipped_batches"] == 0 and row["failed_slides"] == 1 and np.isfinite(row["train_loss"])
    out = capsys.readouterr().out
    assert out.count("skipping train slide from now on: badslides:0: tile 3 is truncated (test)") == 1
    assert "epoch 1: 1 of 3 train slides skipped (unreadable): badslides:0" in out
    assert "epoch 2: 1 of 3 train slides skipped" in out


def test_a_slide_failing_in_the_head_warm_up_is_skipped(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    manifest = manifest_with_failures(tmp_path, 1)
    cfg = tiny_config(manifest, "model.sibling_layout=strips", "model.head_mil=true",
                      "optim.head_warmup_steps=3", "optim.head_warmup_batch=4", "data.max_failed_share=0.2")
    with one_thread():
        trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    assert len(trainer.warmup_losses) == 3 and "badslides:0" in trainer.failures["train"]
    out = capsys.readouterr().out
    assert out.count("skipping train slide from now on: badslides:0") == 1


# (failing training slides among 8 readable, data.max_failed_share, fragment of the one-line stop or "")
SHARE_CASES = [
    (1, 0.0, "1 of 9 train slides could not be read, more than data.max_failed_share=0 allows"),
    (1, 0.05, "1 of 9 train slides could not be read, more than data.max_failed_share=0.05 allows"),
    (3, 0.2, "3 of 11 train slides could not be read, more than data.max_failed_share=0.2 allows"),
    (2, 0.2, ""),  # 2 of 10 is the share itself: allowed
]


@pytest.mark.parametrize(("n_failing", "share", "fragment"), SHARE_CASES)
def test_the_run_stops_past_the_allowed_share(tmp_path: Path, n_failing: int, share: float,
                                              fragment: str) -> None:
    manifest = manifest_with_failures(tmp_path, n_failing)
    # Warm-up reads every training slide before epoch 1: the share is checked there, in a second.
    cfg = tiny_config(manifest, "model.sibling_layout=strips", "model.head_mil=true",
                      "optim.head_warmup_steps=1", f"data.max_failed_share={share}")
    with one_thread():
        if not fragment:
            Trainer(cfg, tmp_path / "run", show_progress=False).folder.release()
            return
        with pytest.raises(MagnetError) as info:
            Trainer(cfg, tmp_path / "run", show_progress=False)
    message = str(info.value)
    assert fragment in message and "(first: badslides:0: tile 3 is truncated (test))" in message
    assert not (tmp_path / "run").exists()  # created for the run, removed again: nothing was written


def test_a_failing_validation_slide_is_logged_and_left_out(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    manifest = manifest_with_failures(tmp_path, 1, split="validation")
    cfg = tiny_config(manifest, "optim.epochs=1", "data.max_failed_share=0.25")
    with one_thread():
        result = Trainer(cfg, tmp_path / "run", show_progress=False).fit()
    assert result.history[0]["val_n"] == 4
    out = capsys.readouterr().out
    assert "skipping validation slide from now on: badslides:0" in out
    assert "epoch 1: 1 of 5 validation slides skipped" in out


@pytest.mark.parametrize(("flags", "code", "word"), [([], 1, "error"), (["--allow-failures"], 0, "warning")])
def test_evaluate_says_how_many_slides_failed(run, tmp_path: Path, flags: list[str], code: int, word: str,  # type: ignore[no-untyped-def]
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, result = run
    manifest = manifest_with_failures(tmp_path, 2, split="test")
    out = tmp_path / "eval"
    with one_thread():
        assert main(["evaluate", str(result.run_dir / "best.ckpt"), str(manifest), "--split", "test",
                     "--out", str(out), "--bootstrap", "10", *flags]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"magnet: {word}: 2 of 8 slides could not be read and are left out")
    assert str(out / "predictions.csv") in err[-1]
    lines = (out / "predictions.csv").read_text().splitlines()
    assert len(lines) == 9 and sum("tile 3 is truncated" in line for line in lines) == 2


def test_predict_keeps_the_slides_done_when_interrupted(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, result = run
    good = balanced_rows()[0].slide
    out = tmp_path / "predictions"
    with one_thread():
        code = main(["predict", str(result.run_dir / "best.ckpt"), good, "interrupting:1", "--out", str(out)])
    assert code == 130
    # The table holds the slide finished before the interruption, and its JSON is there.
    (done,) = list(csv.DictReader((out / "predictions.csv").open(newline="")))
    assert done["slide"] == good and 0 <= float(done["probability"]) <= 1 and not done["error"]
    assert [p.suffix for p in (out / "slides").iterdir()] == [".json"]
    assert "1 slide done in this run; their predictions are in" in capsys.readouterr().err
    assert temp_files(out) == []  # no temporary file left
