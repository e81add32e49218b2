"""``magnet predict --out`` shared by several processes: two CPU ranks (gloo) started by ``torchrun`` or by
Fabric itself (``--devices 2``) predict what one process predicts, each slide on one rank, into one table;
a killed rank loses only its slides in flight and the next run, with any number of processes, finishes the
cohort; a second run on the folder is refused in one line. The model is tiny with random weights: these
tests check files, shares and reruns, not what a trained model says."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pipeline_fixtures import (
    PYTHON,
    one_line_error,
    one_thread,
    random_checkpoint,
    random_png,
    subprocess_env,
    temp_files,
    wait_until,
)

from magnet.cli import main
from magnet.errors import MagnetError
from magnet.evaluation.cohort_store import COLUMNS, CohortStore

URIS = [f"synth:seed={seed},size=2048x2048,lesion=negative" for seed in range(1, 6)]
# Generous: two ranks start in seconds, but the machines running the tests may be busy.
LAUNCH_TIMEOUT = int(os.environ.get("PIPELINE_DDP_TIMEOUT", "900"))

# Runs ``magnet ARGS`` with each slide a rank records listed in RECORD_DIR/rank<k>.txt, and a ``stall:``
# scheme whose opening writes its process id to MARKER (atomically) and sleeps.
RECORDING_PREDICT = """
import os, sys, time
from magnet.evaluation.cohort_store import CohortStore
from magnet.slides.registry import register_scheme

record = CohortStore.record
def recording(self, prediction):
    record(self, prediction)
    with open(os.path.join(os.environ["RECORD_DIR"], f"rank{self.rank}.txt"), "a") as f:
        f.write(prediction["slide"] + "\\n")
CohortStore.record = recording

def stall(uri):
    marker = os.environ["MARKER"]
    with open(marker + ".part", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".part", marker)
    time.sleep(600)
register_scheme("stall", stall)

from magnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("model") / "random.ckpt")


def _rows(table: Path) -> list[dict[str, str]]:
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _slide_json(out: Path, slide: str) -> dict[str, Any]:
    return json.loads(CohortStore(out).json_path(slide).read_text())  # type: ignore[no-any-return]


def _parts(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("predictions.rank*.csv"))


def _torchrun(*argv: str) -> list[str]:
    """Two processes on this machine; ``--standalone`` picks a free port for them."""
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *argv]


def _script(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    script, records = tmp_path / "recording_predict.py", tmp_path / "records"
    script.write_text(RECORDING_PREDICT)
    records.mkdir()
    return script, {**subprocess_env(), "RECORD_DIR": str(records), "MARKER": str(tmp_path / "stalled")}


def _recorded(tmp_path: Path) -> dict[int, list[str]]:
    """The slides each rank recorded, by rank."""
    files = sorted((tmp_path / "records").glob("rank*.txt"))
    return {int(f.stem[4:]): f.read_text().splitlines() for f in files}


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for ``proc`` (its own session: every rank it started); kill them all if it hangs."""
    try:
        return proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        pytest.fail(f"the ranks did not finish within {LAUNCH_TIMEOUT} s (out of step?)")


def _kill_all(proc: subprocess.Popen[Any]) -> None:
    """Kill whatever is left of ``proc``'s session (its ranks), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _launch(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_two_ranks_under_torchrun_predict_what_one_process_predicts(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = random_png(tmp_path / "in" / "scan.png", 1)
    missing = tmp_path / "in" / "missing.svs"
    slides = [URIS[0], str(png), URIS[1], str(missing), URIS[2]]
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    with one_thread():
        assert main(["predict", str(checkpoint), *slides, "--out", str(alone), "--no-progress"]) == 1
    capsys.readouterr()

    script, env = _script(tmp_path)
    proc = _launch(_torchrun(str(script), "predict", str(checkpoint), *slides, "--out", str(shared),
                             "--no-progress"), env)
    stdout, stderr = _finish(proc)
    assert proc.returncode != 0, "a slide failed: the run's status is 1"
    assert stdout.count("5 slides: ") == 1, stdout + stderr[-3000:]  # rank 0 alone reports
    assert (f"5 slides: 4 predicted by 2 processes, 1 failed; predictions in {shared / 'predictions.csv'}"
            in stdout), stdout + stderr[-3000:]
    assert f"error: {missing}: no such file" in stderr

    # Each slide on one rank, the shares even: every other slide of the plan.
    recorded = _recorded(tmp_path)
    assert {rank: sorted(done) for rank, done in recorded.items()} == {0: sorted(slides[0::2]),
                                                                        1: sorted(slides[1::2])}

    # One table, in the order of the slides, equal to the one process's; no part tables left.
    rows, want = _rows(shared / "predictions.csv"), _rows(alone / "predictions.csv")
    assert [r["slide"] for r in rows] == [r["slide"] for r in want] == slides
    assert [r["error"] for r in rows] == [r["error"] for r in want]
    assert [float(r["probability"] or "nan") for r in rows] == pytest.approx(
        [float(r["probability"] or "nan") for r in want], abs=1e-6, nan_ok=True)
    assert _parts(shared) == [] and temp_files(shared) == []
    assert sorted(p.name for p in (shared / "slides").iterdir()) == \
        sorted(p.name for p in (alone / "slides").iterdir())
    for slide in (s for s in slides if s != str(missing)):
        got, expected = _slide_json(shared, slide), _slide_json(alone, slide)
        assert got["probability"] == pytest.approx(expected["probability"], abs=1e-6)
        assert got["running_probabilities"] == pytest.approx(expected["running_probabilities"], abs=1e-6)
        assert got["layers"] == expected["layers"]


def test_a_killed_rank_loses_only_its_slide_in_flight_and_a_rerun_finishes_the_cohort(
        checkpoint: Path, tmp_path: Path) -> None:
    a, b, c, d, e = URIS
    out = tmp_path / "out"
    script, env = _script(tmp_path)
    # Fabric starts the second rank itself. Plan: rank 0 takes a and c, rank 1 takes b, then stalls.
    proc = subprocess.Popen([PYTHON, str(script), "predict", str(checkpoint), a, b, c, "stall:x", "--out",
                             str(out), "--devices", "2", "--prefetch", "0", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    marker, part0 = tmp_path / "stalled", out / "predictions.rank0.csv"
    try:
        wait_until(proc, lambda: marker.exists() and part0.exists() and len(_rows(part0)) == 2,
                   "rank 1 stalling with rank 0 done", timeout=LAUNCH_TIMEOUT)
        stalled = int(marker.read_text())
        assert stalled != proc.pid, "the stalling slide was not on rank 1"
        os.kill(stalled, signal.SIGKILL)
        # Rank 0, waiting for rank 1's share, ends too (the broken connection, or its launcher's watch).
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        _kill_all(proc)
    assert proc.returncode != 0, output
    assert b"Traceback" not in output, output.decode()[-3000:]

    # What each rank finished is in its table, each slide's JSON beside; nothing merged yet.
    assert [r["slide"] for r in _rows(part0)] == [a, c]
    assert [r["slide"] for r in _rows(out / "predictions.rank1.csv")] == [b]
    assert not (out / "predictions.csv").exists()
    written = {s: CohortStore(out).json_path(s).stat().st_mtime_ns for s in (a, b, c)}
    assert temp_files(out) == []

    # The rerun (two processes again, the module form) merges the leftovers and predicts only d and e.
    rerun = _launch(_torchrun("-m", "magnet", "predict", str(checkpoint), a, b, c, d, e, "--out", str(out),
                              "--no-progress"), subprocess_env())
    stdout, stderr = _finish(rerun)
    assert rerun.returncode == 0, stdout + stderr[-3000:]
    assert "5 slides: 2 predicted by 2 processes, 3 done before (skipped)" in stdout, stdout + stderr[-3000:]
    assert [r["slide"] for r in _rows(out / "predictions.csv")] == [a, b, c, d, e]
    assert all(not r["error"] for r in _rows(out / "predictions.csv"))
    assert {s: CohortStore(out).json_path(s).stat().st_mtime_ns for s in (a, b, c)} == written
    assert _parts(out) == [] and temp_files(out) == []


def test_a_second_run_on_the_folder_is_refused_by_rank_zero_in_one_line(checkpoint: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = CohortStore(out)
    holder.claim()
    try:
        proc = _launch([PYTHON, "-m", "magnet", "predict", str(checkpoint), URIS[0], "--out", str(out),
                        "--devices", "2", "--no-progress"], subprocess_env())
        stdout, stderr = _finish(proc)
    finally:
        holder.release()
    assert proc.returncode == 2, stdout + stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("magnet: error: ")]
    assert errors == [f"magnet: error: {out}: another magnet predict is writing to this folder; wait for it "
                      "to end or give another --out"], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (out / "predictions.csv").exists() and _parts(out) == []


def test_a_rank_still_writing_refuses_the_folder_and_its_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    orphan = CohortStore(out, rank=1, world_size=2)  # a rank whose rank 0 died, still predicting
    orphan.claim()
    try:
        for store in (CohortStore(out), CohortStore(out, rank=1, world_size=2)):
            with pytest.raises(MagnetError, match="another magnet predict is writing to this folder"):
                store.claim()
        other = CohortStore(out, rank=2, world_size=3)
        other.claim()  # its own table: free
        other.release()
    finally:
        orphan.release()
    leader = CohortStore(out)
    leader.claim()  # free again once that rank has ended
    leader.release()


def test_a_one_process_run_merges_the_tables_a_killed_run_left(checkpoint: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = URIS[:3]
    out = tmp_path / "out"
    with one_thread():  # a was predicted before; then a run of 2 ranks was killed after b, and a retry of a
        assert main(["predict", str(checkpoint), a, "--out", str(out), "--no-progress"]) == 0
    before = _rows(out / "predictions.csv")
    ranks = [CohortStore(out, rank=r, world_size=2) for r in (0, 1)]
    for store in ranks:
        store.claim()
    try:
        ranks[0].record({"slide": a, "probability": float("nan"), "seconds": 1.0, "error": "a read failed"})
        ranks[1].record({"slide": b, "probability": 0.25, "seconds": 1.0, "error": ""})
    finally:
        for store in ranks:
            store.release()
    assert _parts(out) == ["predictions.rank0.csv", "predictions.rank1.csv"]
    capsys.readouterr()

    with one_thread():
        assert main(["predict", str(checkpoint), c, b, a, "--out", str(out), "--no-progress"]) == 0
    assert "3 slides: 1 predicted, 2 done before (skipped)" in capsys.readouterr().out
    rows = _rows(out / "predictions.csv")
    assert [r["slide"] for r in rows] == [a, b, c]  # b merged before c was predicted
    assert rows[0] == before[0]  # an error never replaces a probability
    assert rows[1]["probability"] == "0.25" and not rows[2]["error"]
    assert _parts(out) == [] and temp_files(out) == []


# (arguments after the checkpoint, with {tmp} for the test's folder; fragment of the one-line error)
BAD_INPUTS = [
    ([URIS[0], "--devices", "2"], "several processes (--devices, --num-nodes, torchrun or srun) share a "
                                  "cohort through its --out folder; give --out"),
    ([URIS[0], "--num-nodes", "2"], "give --out"),
    ([URIS[0], "--out", "{tmp}/out", "--devices", "2", "--device", "cpu:0"],
     "--device cpu:0: with several processes each computes on the device of its local rank; give "
     "--device cpu"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUTS)
def test_bad_options_for_several_processes_are_one_line_before_any_start(
        checkpoint: Path, tmp_path: Path, argv: list[str], fragment: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    with one_thread():
        code = main(["predict", str(checkpoint), *[a.replace("{tmp}", str(tmp_path)) for a in argv],
                     "--no-progress"])
    assert code == 2
    assert fragment in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "two"])
def test_the_process_counts_are_checked(checkpoint: Path, value: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--devices", "--num-nodes"):
        assert main(["predict", str(checkpoint), URIS[0], "--out", "x", option, value]) == 2
        assert f"argument {option}: must be an integer" in capsys.readouterr().err
