"""Shared helpers of the pipeline tests: a tiny recipe, a small balanced virtual data set, cached runs.

Imported by the test files of this folder as ``from pipeline_fixtures import ...`` (pytest puts the test
file's folder on ``sys.path``). Cached objects live at module level, so every test file of a session shares
one data set and one trained run instead of paying for them again.

Sizes: the model is MagNetConfig's ``tiny`` variant shrunk further (view 32, read 64, final 64, GRU 32), so
one epoch over 8 training and 4 validation slides takes about a second on one core. Torch runs on one thread
in every process (``one_thread`` here, ``OMP_NUM_THREADS=1`` for subprocesses): Adam's first step turns
rounding noise in near-zero gradients into full-size steps, so runs on different thread counts differ
visibly, while runs on the same count are bitwise equal.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from magnet.config_io import load_config
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.errors import SlideError
from magnet.slides.base import Slide
from magnet.synth.dataset import make_dataset
from magnet.training.loop import TrainResult, train
from magnet.training.recipe import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
PATCHES = (2, 2, 2)

TINY_RECIPE: dict[str, Any] = {
    "model": {
        "patches_per_layer": list(PATCHES),
        "view_size": 32,
        "read_size": 64,
        "final_size": 64,
        "final_read_size": 128,
        "classifier_input_size": 64,
        "backbone": "small",
        "aux_backbone": "small",
        "gru_hidden": 32,
        "head_branch_channels": 4,
        "aux_layers": [1, 3],
        "sampler": "bilinear",
    },
    "data": {"reader_threads": 1},
    "optim": {"lr": 3.0e-4, "epochs": 3, "batch_size": 4, "grad_clip": 5.0},
    "accelerator": "cpu",
    "seed": 7,
}

_CACHE: dict[str, Any] = {}


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def subprocess_env() -> dict[str, str]:
    """Environment for ``magnet`` subprocesses: one thread, the repository importable."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def write_recipe(path: Path, manifest: Path | str, **sections: dict[str, Any]) -> Path:
    """Write the tiny recipe (sections updated by ``sections``) with ``data.manifest`` set."""
    recipe = yaml.safe_load(yaml.safe_dump(TINY_RECIPE))  # deep copy
    recipe["data"]["manifest"] = str(manifest)
    for name, values in sections.items():
        if isinstance(recipe.get(name), dict):
            recipe[name].update(values)
        else:
            recipe[name] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def balanced_rows(seed: int = 11) -> list[ManifestRow]:
    """18 virtual slides: train 4+4, validation 2+2, test 3+3 (one macro, one micro, one ITC)."""
    key = f"rows-{seed}"
    if key not in _CACHE:
        slides = make_dataset(28, seed, size=(32768, 32768))
        by_class: dict[str, list[Any]] = {}
        for s in slides:
            by_class.setdefault(s.lesion_class, []).append(s)
        pos = by_class["macro"] + by_class["micro"] + by_class["itc"]
        test_pos = [by_class["macro"][0], by_class["micro"][0], by_class["itc"][0]]
        rest_pos = [s for s in pos if s not in test_pos]
        neg = by_class["negative"]
        plan = [("test", test_pos), ("test", neg[:3]), ("train", rest_pos[:4]), ("train", neg[3:7]),
                ("validation", rest_pos[4:6]), ("validation", neg[7:9])]
        rows = []
        for split, members in plan:
            assert members and (split != "validation" or len(members) == 2), "data set too small"
            rows += [ManifestRow(s.uri, s.label, s.lesion_class, split) for s in members]
        _CACHE[key] = rows
    return list(_CACHE[key])


def dataset(folder: Path) -> Path:
    """Write the balanced manifest into ``folder`` once per session; return its path."""
    if "manifest" not in _CACHE:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "manifest.csv"
        write_manifest(balanced_rows(), path)
        _CACHE["manifest"] = path
    return Path(_CACHE["manifest"])


def tiny_config(manifest: Path, *overrides: str, folder: Path | None = None) -> TrainConfig:
    recipe = write_recipe((folder or manifest.parent) / "tiny.yaml", manifest)
    return load_config(TrainConfig, recipe, list(overrides))


def base_run(root: Path) -> tuple[TrainConfig, TrainResult]:
    """The tiny recipe trained for 3 epochs once per session (one thread), into ``root/base``."""
    if "base" not in _CACHE:
        manifest = dataset(root / "data")
        cfg = tiny_config(manifest)
        with one_thread():
            result = train(cfg, root / "base", show_progress=False)
        _CACHE["base"] = (cfg, result)
    return _CACHE["base"]  # type: ignore[no-any-return]


def metric_rows(history: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    """The deterministic metrics of each epoch (timings left out), NaN as None for comparison."""
    keys = ("epoch", "lr", "train_loss", "train_final", "train_aux", "train_paradoxical",
            "skipped_batches", "val_auroc", "val_n")
    return [tuple(None if isinstance(v, float) and math.isnan(v) else v
                  for v in (float(h[k]) for k in keys)) for h in history]  # type: ignore[misc]


def assert_rows_close(got: list[tuple[float, ...]], want: list[tuple[float, ...]]) -> None:
    """Per-epoch metric rows equal to float tolerance (None, i.e. NaN, only where the other is None)."""
    assert len(got) == len(want), (got, want)
    for a, b in zip(got, want, strict=True):
        assert [x is None for x in a] == [y is None for y in b], (a, b)
        assert [x for x in a if x is not None] == pytest.approx([y for y in b if y is not None],
                                                                 rel=1e-6, abs=1e-9), (a, b)


def temp_files(folder: Path) -> list[Path]:
    """Leftovers of atomic writes (``*.tmp``) anywhere under ``folder``."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


PYTHON = sys.executable


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error output, asserted to be one ``magnet: error:`` line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("magnet: error: ") and "\n" not in err, err
    return err


class FailingReads(Slide):
    """Opens fine (so the manifest validates) but every pixel read fails, as a truncated file would. Register
    it under a scheme of the test's own (``register_scheme(name, FailingReads)``)."""

    backend = "test-failing"

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((8192, 8192),)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        raise SlideError(self.path, "tile 3 is truncated (test)")


# A MagNet small enough to predict a slide in a fraction of a second, with random weights: what the tests
# of ``magnet predict`` need (they check files, rows and reruns, not what a trained model says).
RANDOM_MODEL: dict[str, Any] = {
    "patches_per_layer": [2, 2], "view_size": 32, "read_size": 64, "final_size": 32, "final_read_size": 64,
    "classifier_input_size": 32, "backbone": "small", "aux_backbone": "small", "gru_hidden": 8,
    "head_branch_channels": 4, "aux_layers": [1], "sampler": "bilinear",
}


def random_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a checkpoint of ``RANDOM_MODEL`` with weights drawn from ``seed`` at ``path``; return it."""
    from magnet.config_io import config_from_dict
    from magnet.models.magnet import MagNet
    from magnet.training.checkpoints import config_dict, save_checkpoint

    cfg = config_from_dict(TrainConfig, {"model": RANDOM_MODEL, "accelerator": "cpu",
                                         "data": {"reader_threads": 1}})
    torch.manual_seed(seed)
    model = MagNet(cfg.model, load_weights=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"config": config_dict(cfg), "model": model.state_dict(), "epoch": 0,
                           "best_score": 0.0, "history": []})
    return path


# How long a test waits for a child process's moment before it fails: a safeguard against a hang, not a
# speed limit, so generous (an epoch of a test run took over 3 minutes on a 2-core machine under load).
SAFEGUARD_SECONDS = 900.0


def random_png(path: Path, seed: int) -> Path:
    """A 128 x 96 RGB image of uniform noise drawn from ``seed``, saved at ``path`` (folders made)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
    return path


def wait_until(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, *,
               timeout: float = SAFEGUARD_SECONDS) -> None:
    """Return once ``ready()``; fail the test if ``proc`` ends first or ``timeout`` s pass (a safeguard).

    ``what`` names the moment waited for in the failure message.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the command ended (status {proc.returncode}) before {what}:\n{output[-3000:]}")
        assert time.monotonic() < deadline, f"{what} did not come within {timeout:g} s"
        time.sleep(0.1)


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, *,
              timeout: float = SAFEGUARD_SECONDS) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail the test if it ends first or ``timeout`` s pass.

    ``what`` names the moment waited for in the failure message. The process and its stdout pipe are always
    cleaned up.
    """
    try:
        wait_until(proc, ready, what, timeout=timeout)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
