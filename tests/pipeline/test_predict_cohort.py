"""``magnet predict`` over a cohort: files, folders, URIs and a manifest in; ``predictions.csv`` and one JSON
per slide out; a rerun skips what is done; a failed slide is a row (retried only when asked); bad input is
one line before any work. The model is tiny with random weights: these tests check files and runs, not what
a trained model says."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipeline_fixtures import (
    PYTHON,
    kill_when,
    one_line_error,
    one_thread,
    random_checkpoint,
    random_png,
    subprocess_env,
    temp_files,
)

from magnet.cli import main
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.errors import MagnetError
from magnet.evaluation.cohort_store import COLUMNS, CohortStore
from magnet.slides.base import Slide
from magnet.slides.registry import register_scheme

URI_A = "synth:seed=1,size=2048x2048,lesion=negative"
URI_B = "synth:seed=2,size=2048x2048,lesion=negative"
N_ROIS = [2, 4]  # RANDOM_MODEL: 2 ROIs in layer 1, 2 children each in layer 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("model") / "random.ckpt")


def _predict(*argv: str) -> int:
    with one_thread():
        return main(["predict", *argv, "--no-progress"])


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _slide_json(out: Path, slide: str) -> dict[str, Any]:
    return json.loads(CohortStore(out).json_path(slide).read_text())  # type: ignore[no-any-return]


def test_a_cohort_of_files_folders_uris_and_a_manifest_round_trips(  # type: ignore[no-untyped-def]
        checkpoint: Path, tmp_path: Path, tiny_tiff, capsys: pytest.CaptureFixture[str]) -> None:
    scans = tmp_path / "scans"
    day = random_png(scans / "day1" / "b.png", 1)
    (scans / "day1" / "notes.txt").write_text("not a slide")
    random_png(scans / ".hidden" / "skipped.png", 9)  # hidden folders are not searched
    tiff, _ = tiny_tiff("a.tif", compression="zlib", mpp=0.5)
    os.replace(tiff, scans / "A.TIF")  # extensions match in any case
    same_name = random_png(tmp_path / "elsewhere" / "b.png", 2)  # one file name, two folders: two JSON files
    manifest = tmp_path / "manifest.csv"
    write_manifest([ManifestRow(URI_B, 1), ManifestRow(str(day), 0)], manifest)  # day: a duplicate

    out = tmp_path / "out"
    assert _predict(str(checkpoint), str(scans), URI_A, str(same_name), "--manifest", str(manifest),
                    "--out", str(out)) == 0
    want = [str(scans / "A.TIF"), str(day), URI_A, str(same_name), URI_B]
    rows = _rows(out)
    assert [r["slide"] for r in rows] == want  # folders sorted, each slide once, in the order given
    assert all(not r["error"] and 0 < float(r["probability"]) < 1 and float(r["seconds"]) > 0 for r in rows)
    assert len(list((out / "slides").iterdir())) == len(want)
    for row in rows:
        obj = _slide_json(out, row["slide"])
        assert obj["slide"] == row["slide"] and obj["probability"] == float(row["probability"])
        assert [len(boxes) for boxes in obj["layers"]] == N_ROIS
        assert len(obj["running_probabilities"]) == N_ROIS[-1]
        assert obj["running_probabilities"][-1] == pytest.approx(obj["probability"], abs=1e-6)
    assert _slide_json(out, str(scans / "A.TIF"))["slide_size"] == [128, 96]
    assert f"5 slides: 5 predicted; predictions in {out / 'predictions.csv'}" in capsys.readouterr().out
    assert temp_files(out) == []

    # Without --out: the same predictions as a JSON list on standard output, whatever the read-ahead.
    assert _predict(str(checkpoint), *want, "--prefetch", "0", "--batch-size", "2") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [o["slide"] for o in listed] == want
    assert [o["probability"] for o in listed] == pytest.approx([float(r["probability"]) for r in rows],
                                                               abs=1e-6)  # batches of 2: rounding may differ


def test_a_rerun_skips_the_slides_done_and_predicts_the_new_ones(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    first = random_png(tmp_path / "in" / "first.png", 1)
    assert _predict(str(checkpoint), str(tmp_path / "in"), URI_A, "--out", str(out)) == 0
    before = _rows(out)
    written = {p.name: p.stat().st_mtime_ns for p in (out / "slides").iterdir()}
    capsys.readouterr()

    random_png(tmp_path / "in" / "second.png", 2)  # the day's new scan
    assert _predict(str(checkpoint), URI_A, str(tmp_path / "in"), "--out", str(out)) == 0
    assert "3 slides: 1 predicted, 2 done before (skipped)" in capsys.readouterr().out
    after = _rows(out)
    assert after[:2] == before  # rows of the slides done are kept as they were, in their place
    assert after[2]["slide"] == str(tmp_path / "in" / "second.png") and not after[2]["error"]
    assert {n: t for n, t in written.items()} == {p.name: p.stat().st_mtime_ns
                                                 for p in (out / "slides").iterdir() if p.name in written}
    # Another spelling of a slide done is the same slide.
    assert _predict(str(checkpoint), str(first.parent / ".." / "in" / "first.png"), "--out", str(out)) == 0
    assert "1 slide: 0 predicted, 1 done before (skipped)" in capsys.readouterr().out


def _write_garbage(path: Path) -> Path:
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 8)  # a TIFF signature, then nonsense
    return path


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow, trying the garbage file as an image
def test_a_slide_that_fails_is_a_row_and_is_retried_only_when_asked(  # type: ignore[no-untyped-def]
        checkpoint: Path, tmp_path: Path, tiny_tiff, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _write_garbage(tmp_path / "broken.svs")
    missing = tmp_path / "missing.ndpi"
    out = tmp_path / "out"
    argv = [str(checkpoint), URI_A, str(broken), str(missing), "--out", str(out)]
    assert _predict(*argv) == 1
    rows = _rows(out)
    by_slide = {r["slide"]: r for r in rows}  # rows come in the order done: failures may precede
    assert len(rows) == 3 and sorted(by_slide) == sorted([URI_A, str(broken), str(missing)])
    assert not by_slide[URI_A]["error"]
    for row, reason in ((by_slide[str(broken)], "corrupt or unsupported slide"),
                        (by_slide[str(missing)], "no such file")):
        assert row["probability"] == "" and row["error"].startswith(f"{row['slide']}: ")
        assert reason in row["error"] and "\n" not in row["error"]
    assert len(list((out / "slides").iterdir())) == 1  # no JSON for a failed slide
    captured = capsys.readouterr()
    assert f"error: {broken}: corrupt or unsupported slide" in captured.err
    assert "Traceback" not in captured.err
    assert "3 slides: 1 predicted, 2 failed;" in captured.out

    assert _predict(*argv) == 1  # failed slides are not retried unless asked, and still fail the run
    assert "1 done before (skipped), 2 failed before (not retried" in capsys.readouterr().out
    assert _rows(out) == rows

    tiff, _ = tiny_tiff("fixed.tif", compression="zlib")
    os.replace(tiff, broken)  # the file is fixed (rescanned)
    assert _predict(*argv, "--retry-failed") == 1  # the missing file still fails
    retried = _rows(out)
    assert [r["slide"] for r in retried] == [r["slide"] for r in rows]  # replaced in place
    assert retried[0] == rows[0] and not retried[1]["error"] and 0 < float(retried[1]["probability"]) < 1
    assert "no such file" in retried[2]["error"]
    assert _slide_json(out, str(broken))["slide_size"] == [128, 96]


class _Interrupting(Slide):
    """Opens, then a read is interrupted (Ctrl-C or SIGTERM arriving while the slide is read)."""

    backend = "test-interrupting"

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((4096, 4096),)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        raise KeyboardInterrupt


register_scheme("cohort-interrupt", _Interrupting)


@pytest.mark.parametrize("prefetch", ["0", "2"])
def test_an_interrupted_cohort_keeps_the_slides_done_and_a_rerun_finishes_it(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], prefetch: str) -> None:
    out = tmp_path / "out"
    argv = [str(checkpoint), URI_A, "cohort-interrupt:1", "--out", str(out), "--prefetch", prefetch]
    assert _predict(*argv) == 130
    assert [r["slide"] for r in _rows(out)] == [URI_A]
    assert "1 slide done in this run" in capsys.readouterr().err
    assert temp_files(out) == []
    assert _predict(str(checkpoint), URI_A, URI_B, "--out", str(out)) == 0
    assert [r["slide"] for r in _rows(out)] == [URI_A, URI_B]
    assert "2 slides: 1 predicted, 1 done before (skipped)" in capsys.readouterr().out


# Runs ``magnet predict ARGS`` with a ``stall:`` scheme whose opening writes MARKER and sleeps.
STALLING_PREDICT = """
import os, sys, time
from magnet.slides.registry import register_scheme
def stall(uri):
    open(os.environ["MARKER"], "w").close()
    time.sleep(600)
register_scheme("stall", stall)
from magnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_cohort_keeps_every_slide_done_and_a_rerun_finishes_it(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, marker = tmp_path / "out", tmp_path / "stalled"
    env = {**subprocess_env(), "MARKER": str(marker)}
    # Reading in place (--prefetch 0): the stalling slide is opened only after the two before it are done.
    proc = subprocess.Popen([PYTHON, "-c", STALLING_PREDICT, "predict", str(checkpoint), URI_A, URI_B,
                             "stall:x", "--out", str(out), "--prefetch", "0", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kill_when(proc, marker.exists, "the stalling slide")
    assert proc.returncode == -signal.SIGKILL
    assert [r["slide"] for r in _rows(out)] == [URI_A, URI_B]
    assert all(_slide_json(out, s)["slide"] == s for s in (URI_A, URI_B))
    assert temp_files(out) == []

    random_png(tmp_path / "in" / "c.png", 3)
    capsys.readouterr()
    assert _predict(str(checkpoint), URI_A, URI_B, str(tmp_path / "in"), "--out", str(out)) == 0
    assert "3 slides: 1 predicted, 2 done before (skipped)" in capsys.readouterr().out
    assert len(_rows(out)) == 3


# (arguments after the checkpoint, with {tmp} for the test's folder; fragment of the one-line error)
BAD_INPUTS = [
    (["{tmp}/empty"], "{tmp}/empty: no slide files in this folder or below (looked for .bif .bmp"),
    ([], "no slides to predict: give slide files, folders or URIs, or --manifest"),
    ([URI_A, "--out", "{tmp}/p.json"], "{tmp}/p.json: --out names a folder"),
    ([URI_A, "--retry-failed"], "--retry-failed needs --out"),
    ([URI_A, "--device", "tpu:7"], "--device tpu:7: "),
    ([URI_A, "--device", "nonsense"], "--device nonsense: not a torch device"),
    (["--manifest", "{tmp}/missing.csv"], "{tmp}/missing.csv: no such manifest file"),
    ([URI_A, "--out", "{tmp}/evaluated"], "{tmp}/evaluated/predictions.csv: expected the columns "
                                          "slide,probability,seconds,error, found slide,probability,label"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUTS)
def test_bad_input_is_one_line_before_any_work(checkpoint: Path, tmp_path: Path, argv: list[str],
                                               fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no slides here")
    (tmp_path / "evaluated").mkdir()
    (tmp_path / "evaluated" / "predictions.csv").write_text("slide,probability,label\nx,0.5,1\n")
    assert _predict(str(checkpoint), *[a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert fragment.replace("{tmp}", str(tmp_path)) in one_line_error(capsys)
    assert not (tmp_path / "p.json").exists()


def test_cuda_is_refused_in_one_line_where_there_is_none(checkpoint: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert _predict(str(checkpoint), URI_A, "--device", "cuda") == 2
    assert "--device cuda: CUDA is not available on this machine" in one_line_error(capsys)


@pytest.mark.parametrize(("option", "value"),
                         [("--batch-size", "0"), ("--workers", "0"), ("--prefetch", "-1"),
                          ("--workers", "two")])
def test_numeric_options_are_checked(checkpoint: Path, option: str, value: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _predict(str(checkpoint), URI_A, option, value) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be an integer" in err


def test_a_folder_holds_one_checkpoint_and_one_writer(checkpoint: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _predict(str(checkpoint), URI_A, "--out", str(out)) == 0
    other = random_checkpoint(tmp_path / "other.ckpt", seed=1)
    capsys.readouterr()
    assert _predict(str(other), URI_B, "--out", str(out)) == 2
    assert f"{out}: holds the predictions of another checkpoint ({checkpoint})" in one_line_error(capsys)
    assert [r["slide"] for r in _rows(out)] == [URI_A]

    holder = CohortStore(out)
    holder.claim()
    try:
        with pytest.raises(MagnetError, match="another magnet predict is writing to this folder"):
            CohortStore(out).claim()
    finally:
        holder.release()


def test_a_write_that_fails_mid_run_is_one_line_naming_the_file(tmp_path: Path) -> None:
    store = CohortStore(tmp_path / "out")
    store.claim()
    try:
        (tmp_path / "out" / "slides").rmdir()
        (tmp_path / "out" / "slides").write_text("in the way")  # the folder replaced under the run
        with pytest.raises(MagnetError) as info:
            store.record({"slide": URI_A, "probability": 0.5, "seconds": 1.0, "error": ""})
    finally:
        store.release()
    message = str(info.value)
    assert message.startswith(str(tmp_path / "out" / "slides")) and "cannot write" in message
    assert "\n" not in message


def _recorded(store: CohortStore, spec: str, probability: float | None, error: str = "") -> None:
    store.record({"slide": spec, "probability": float("nan") if probability is None else probability,
                  "seconds": 1.0, "error": error})


def _table(folder: Path) -> list[dict[str, str]]:
    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_each_result_is_appended_not_a_rewrite_of_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = CohortStore(out)
    store.claim()
    try:
        _recorded(store, URI_A, 0.25)
        table = out / "predictions.csv"
        inode, first = table.stat().st_ino, table.read_bytes()
        _recorded(store, URI_B, None, "could not be read")
        # The same file grew by one line: the earlier rows were not written again.
        assert table.stat().st_ino == inode and table.read_bytes().startswith(first)
        store.finish()
    finally:
        store.release()
    assert [(r["slide"], r["probability"], r["error"]) for r in _table(out)] == [
        (URI_A, "0.25", ""), (URI_B, "", "could not be read")]


def test_a_row_cut_by_a_kill_is_dropped_and_the_table_made_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = CohortStore(out)
    store.claim()
    _recorded(store, URI_A, 0.25)
    store.release()
    with (out / "predictions.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"{URI_B},0.7")  # killed in the middle of appending B's row: no line end
    again = CohortStore(out)
    again.claim()
    try:
        assert again.plan([URI_A, URI_B]).todo == [URI_B]  # B is predicted again, not read as 0.7
        _recorded(again, URI_B, 0.75)
    finally:
        again.release()
    assert [(r["slide"], r["probability"]) for r in _table(out)] == [(URI_A, "0.25"), (URI_B, "0.75")]


def test_a_retried_slide_keeps_its_place_with_its_new_row(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = CohortStore(out)
    first.claim()
    _recorded(first, URI_A, None, "a read failed")
    _recorded(first, URI_B, 0.5)
    first.finish()
    first.release()
    second = CohortStore(out)
    second.claim()
    try:
        assert second.plan([URI_A, URI_B], retry_failed=True).todo == [URI_A]
        _recorded(second, URI_A, 0.125)
        assert [r["slide"] for r in second.rows()] == [URI_A, URI_B]
        second.finish()
    finally:
        second.release()
    assert [(r["slide"], r["probability"], r["error"]) for r in _table(out)] == [
        (URI_A, "0.125", ""), (URI_B, "0.5", "")]
