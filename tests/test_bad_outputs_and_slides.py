"""Bad output paths, one slide under two spellings, noisy slide libraries, interrupted exports, crashes.

Each bad input ends in one line naming the path or row and the reason, before any work and without
leaving anything half-written. Matrices are (input, fragment of the expected one-line error).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from magnet.cli import main
from magnet.data.manifest import read_manifest
from magnet.errors import MagnetError, NonFiniteError, SlideError
from magnet.outputs import output_file, output_folder
from magnet.slides.memory import MemorySlide
from magnet.slides.registry import register_scheme, slide_identity

REPO_ROOT = Path(__file__).resolve().parents[1]
URI = "synth:seed=1,size=2048x2048,lesion=negative"


def _file(tmp: Path) -> Path:
    (tmp / "taken.txt").write_text("a file in the way")
    return tmp / "taken.txt"


# (output check, path under tmp_path, fragment): refused before any work, naming the path and why.
OUTPUT_CASES: list[tuple[Callable[..., Path], Callable[[Path], Path], str]] = [
    (output_folder, lambda t: _file(t), "is a file, not a folder"),
    (output_folder, lambda t: _file(t) / "run", "is a file, not a folder"),
    (output_file, lambda t: _file(t) / "p.json", "is a file, not a folder"),
    (output_file, lambda t: t, "is a folder; give the name of a file to write"),
    (output_folder, lambda t: Path("/proc/magnet-test/run"), "cannot create the folder /proc/magnet-test"),
    (output_file, lambda t: Path("/proc/magnet-test.json"), "cannot write in the folder /proc"),
]


@pytest.mark.parametrize(("check", "where", "fragment"), OUTPUT_CASES)
def test_an_output_path_that_cannot_be_written_is_refused(check, where, fragment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = where(tmp_path)
    with pytest.raises(MagnetError) as info:
        check(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_missing_output_folders_are_created_and_left_clean(tmp_path: Path) -> None:
    assert output_folder(tmp_path / "a" / "b").is_dir()
    assert output_file(tmp_path / "c" / "p.json") == tmp_path / "c" / "p.json"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "c"]  # no probe file left


# (command line with {bad} for an output path under a file, fragment): each command checks first.
CLI_OUTPUT_CASES = [
    (["synth", "export", URI, "{bad}/slide.tif"], "is a file, not a folder"),
    (["synth", "dataset", "--n", "2", "--out", "{bad}"], "is a file, not a folder"),
    (["slide-info", URI, "--thumbnail", "{bad}/t.png"], "is a file, not a folder"),
    (["predict", "missing.ckpt", URI, "--out", "{bad}/predictions"], "is a file, not a folder"),
    (["data", "camelyon", "--c16", "x", "--out", "{bad}/m.csv"], "is a file, not a folder"),
    (["demo", "--config", str(REPO_ROOT / "configs" / "demo.yaml"), "--out", "{bad}"],
     "is a file, not a folder"),
]


@pytest.mark.parametrize(("argv", "fragment"), CLI_OUTPUT_CASES)
def test_cli_refuses_an_unwritable_output_before_the_work(argv: list[str], fragment: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = _file(tmp_path)
    assert main([a.replace("{bad}", str(bad)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"magnet: error: {bad}") and fragment in err and err.count("\n") == 1


# --- one slide, one identity ---------------------------------------------------------------------------


def _png(folder: Path, name: str = "a.png") -> Path:
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(folder / name)
    return folder / name


# (first row's slide, second row's slide, fragment); {dir} is the manifest's folder, a.png a file in it
# and link.png a symbolic link to it.
DUPLICATE_CASES = [
    (URI, URI, f"duplicate of row 2 ({URI})"),
    (URI, "synth:lesion=negative,seed=1,size=2048x2048",
     f"synth:lesion=negative,seed=1,size=2048x2048 is the same slide as {URI}"),
    (URI, "synth:seed=1,size=2048x2048", "is the same slide as"),  # the lesion a seed draws is filled in
    ("a.png", "sub/../a.png", "duplicate of row 2 ({dir}/a.png)"),
    ("a.png", "link.png", "{dir}/link.png is the same slide as {dir}/a.png"),
    ("{dir}/a.png", "a.png", "duplicate of row 2 ({dir}/a.png)"),
]


@pytest.mark.parametrize(("first", "second", "fragment"), DUPLICATE_CASES)
def test_one_slide_under_two_spellings_is_refused_naming_both_rows(
    tmp_path: Path, first: str, second: str, fragment: str
) -> None:
    (tmp_path / "sub").mkdir()
    os.symlink(_png(tmp_path), tmp_path / "link.png")
    manifest = tmp_path / "manifest.csv"
    cells = [f'"{c.format(dir=tmp_path)}"' for c in (first, second)]
    manifest.write_text(f"slide,label\n{cells[0]},0\n{cells[1]},1\n")
    with pytest.raises(MagnetError) as info:
        read_manifest(manifest, check_slides=False)
    message = str(info.value)
    assert message.startswith(f"{manifest}: 1 bad row: row 3: duplicate of row 2")
    assert fragment.format(dir=tmp_path) in message
    assert message.endswith("(label 1 here, 0 there)") and "\n" not in message


def test_slide_identity_follows_the_scheme_and_the_file_system(tmp_path: Path) -> None:
    png = _png(tmp_path)
    os.symlink(png, tmp_path / "link.png")
    assert slide_identity(tmp_path / "link.png") == slide_identity(png) == str(png.resolve())
    assert slide_identity("synth:lesion=negative,size=2048x2048,seed=1") == URI
    assert slide_identity("synth:seed=x") == "synth:seed=x"  # unparsable: itself (opening says why)


# --- library noise is one line ---------------------------------------------------------------------------


def _noisy(uri: str) -> MemorySlide:
    os.write(2, b"TIFFReadDirectory: Warning, Unknown field with tag 50838\n" * 200)
    logging.getLogger("tifffile").warning("<tifffile.TiffFile 'x.tif'> invalid tag")
    if "bad" in uri:
        raise SlideError(uri, "tile 3 is corrupt (test)")
    return MemorySlide(np.full((64, 64, 3), 200, np.uint8), path=uri)


register_scheme("noisy", _noisy)


@pytest.mark.parametrize(("uri", "code", "expected"), [
    ("noisy:bad", 2, "magnet: error: noisy:bad: tile 3 is corrupt (test)"),
    ("noisy:good", 0, "magnet: note: 201 messages of the slide libraries hidden (first: "),
])
def test_library_noise_is_reduced_to_one_line(uri: str, code: int, expected: str,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["slide-info", uri]) == code
    err = capfd.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1


# --- an interrupted export leaves no temporary file --------------------------------------------------------


def test_a_terminated_export_removes_its_temporary_file(tmp_path: Path) -> None:
    """SIGTERM (a scheduler, ``timeout``) ends the command like Ctrl-C: cleanup runs, status 143."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    target = tmp_path / "slide.tif"
    proc = subprocess.Popen([sys.executable, "-m", "magnet.cli", "synth", "export",
                             "synth:seed=3,size=60000x60000,lesion=macro", str(target)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a safeguard: starting Python and torch under load is slow
        while not list(tmp_path.glob(".*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list(tmp_path.glob(".*.tmp")), "the export never started writing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# --- the two known crashes -------------------------------------------------------------------------------

# (devices as a recipe writes it, fragment): refused with one line, never Lightning's traceback.
DEVICES_CASES = [
    ('"0"', "devices=0: must be an integer >= 1"),
    ('"abc"', "devices='abc': must be an integer >= 1, 'auto', '-1' (every device) or device indices"),
    ('""', "devices='': must be an integer >= 1"),
    ('"1;2"', "devices='1;2': must be"),
]


@pytest.mark.parametrize(("value", "fragment"), DEVICES_CASES)
def test_devices_text_is_refused_with_one_line(value: str, fragment: str, tmp_path: Path) -> None:
    from magnet.config_io import load_config
    from magnet.errors import ConfigError
    from magnet.training.recipe import TrainConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"devices: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, recipe)
    assert str(info.value).startswith(f"{recipe}: ") and fragment in str(info.value)


def test_devices_indices_on_a_cpu_are_one_line(tmp_path: Path) -> None:
    from magnet.errors import ConfigError
    from magnet.training.loop import Trainer
    from magnet.training.recipe import TrainConfig

    rows = read_manifest_rows()
    with pytest.raises(ConfigError, match=r"devices=0,1 .*CPUAccelerator"):
        Trainer(TrainConfig(accelerator="cpu", devices="0,1"), tmp_path / "run", manifest_rows=rows)
    assert not (tmp_path / "run").exists()


def read_manifest_rows() -> list:  # type: ignore[type-arg]
    from magnet.data.manifest import ManifestRow

    return [ManifestRow(URI, 0, "negative", "train"), ManifestRow("synth:seed=2,size=2048x2048,lesion=macro",
                                                                  1, "macro", "train")]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_reaching_sparsemax_are_a_clear_error(bad: float) -> None:
    from magnet.layers.sparsemax import spatial_sparsemax

    logits = torch.zeros(2, 4, 4)
    logits[1, 2, 3] = bad
    with pytest.raises(NonFiniteError, match=r"non-finite scores \((nan|inf)\) reached the sparsemax"):
        spatial_sparsemax(logits)


def test_a_nan_inside_the_model_stops_training_naming_the_step(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import magnet.models.zoom as zoom
    from magnet.config_io import config_from_dict
    from magnet.training.loop import Trainer
    from magnet.training.recipe import TrainConfig

    real = zoom.spatial_sparsemax
    monkeypatch.setattr(zoom, "spatial_sparsemax", lambda logits: real(logits * float("nan")))
    tiny = {"patches_per_layer": [2], "view_size": 32, "read_size": 64, "final_size": 32,
            "final_read_size": 64, "classifier_input_size": 32, "backbone": "small", "aux_backbone": "small",
            "gru_hidden": 8, "head_branch_channels": 4, "aux_layers": [1], "sampler": "bilinear"}
    cfg = config_from_dict(TrainConfig, {"model": tiny, "accelerator": "cpu", "optim": {"epochs": 1},
                                         "data": {"val_split": "", "reader_threads": 1}})
    trainer = Trainer(cfg, tmp_path / "run", manifest_rows=read_manifest_rows(), show_progress=False)
    with pytest.raises(MagnetError, match=r"^epoch 1, step 1: non-finite scores \(nan\) reached the sparsemax"
                                          r".*; stopped without saving it"):
        trainer.fit()
    assert not (tmp_path / "run" / "last.ckpt").exists()
