"""``magnet train`` killed with SIGKILL in the middle of epoch 2, then ``--resume``d: the finished run's
metrics equal those of a run that never stopped (on the CPU, a resumed run gives the same metrics).

The kill must land inside epoch 2, never after the run ended, whatever the machine's load: the subprocess
runs ``magnet train`` with its loss wrapped so that the second batch of epoch 2 (after one optimiser step
of that epoch, so the in-memory model is ahead of ``last.ckpt``) writes a marker file and sleeps. The test
kills the process once the marker exists and ``last.ckpt`` (polled by loading it) reports epoch 1.
"""

from __future__ import annotations

import csv
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import (
    PYTHON,
    assert_rows_close,
    base_run,
    kill_when,
    metric_rows,
    one_thread,
    subprocess_env,
    temp_files,
    write_recipe,
)

from magnet.cli import main

# Runs ``magnet train ARGS`` with the loss wrapped: call number STALL_AT writes MARKER and sleeps.
STALLING_TRAIN = """
import os, sys, time
import magnet.training.loop as t
real, calls = t.magnet_loss, [0]
def stalling(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["STALL_AT"]):
        open(os.environ["MARKER"], "w").close()
        time.sleep(600)
    return real(*args, **kwargs)
t.magnet_loss = stalling
from magnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_killed_run_resumes_to_the_same_metrics(tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path) -> None:
    cfg, reference = base_run(tmp_path_factory.getbasetemp() / "pipeline")
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)
    out, marker = tmp_path / "run", tmp_path / "stalled"
    batches_per_epoch = -(-sum(r.split == "train" for r in _manifest_rows(cfg.data.manifest)) // 4)
    env = {**subprocess_env(), "STALL_AT": str(batches_per_epoch + 2), "MARKER": str(marker)}
    proc = subprocess.Popen([PYTHON, "-c", STALLING_TRAIN, "train", str(recipe), "--out", str(out),
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kill_when(proc, lambda: marker.exists() and _checkpoint_epoch(out / "last.ckpt") >= 1, "epoch 2")
    assert proc.returncode == -signal.SIGKILL
    assert _checkpoint_epoch(out / "last.ckpt") == 1  # killed inside epoch 2, its checkpoint is epoch 1's
    assert temp_files(out) == []
    assert len(_csv_rows(out / "metrics.csv")) == 1

    with one_thread():
        code = main(["train", str(recipe), "--out", str(out), "--resume", "--no-progress"])
    assert code == 0
    resumed = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 3
    assert_rows_close(metric_rows(resumed["history"]), metric_rows(reference.history))
    want = _csv_rows(reference.run_dir / "metrics.csv")
    got = _csv_rows(out / "metrics.csv")
    assert [r["epoch"] for r in got] == ["1", "2", "3"]
    for key in ("lr", "train_loss", "train_final", "train_aux", "val_auroc"):
        assert [float(r[key]) for r in got] == pytest.approx([float(r[key]) for r in want], rel=1e-6), key
    reference_weights = torch.load(reference.run_dir / "last.ckpt", weights_only=True)["model"]
    assert all(torch.allclose(resumed["model"][k].float(), v.float(), atol=1e-6)
               for k, v in reference_weights.items())
    torch.load(out / "best.ckpt", map_location="cpu", weights_only=True)  # loadable
    assert temp_files(out) == []


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path,
                                                      tmp_path_factory: pytest.TempPathFactory,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = base_run(tmp_path_factory.getbasetemp() / "pipeline")
    recipe = write_recipe(tmp_path / "tiny.yaml", cfg.data.manifest)
    assert main(["train", str(recipe), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing to resume" in err and str(tmp_path / "empty") in err


def _manifest_rows(path: str) -> list[object]:
    from magnet.data.manifest import read_manifest

    return list(read_manifest(path, check_slides=False).rows)
