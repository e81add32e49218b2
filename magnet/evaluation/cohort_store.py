"""The output folder of ``magnet predict --out``: what was predicted for a cohort, kept across runs.

Layout::

    OUT/predictions.csv         slide, probability, seconds, error: one row per slide, in the order done
    OUT/slides/<name>.json      per slide predicted: probability, ROIs of every layer (level-0 boxes),
                                running probabilities, slide size and pixel size (``SlidePrediction``)
    OUT/checkpoint.json         the checkpoint the predictions come from (path, SHA-256 of its bytes)

``<name>`` is ``magnet.slides.names.stable_slide_name``: the slide's file name (or URI) made safe, and a
short hash of its identity, so two slides of one file name in different folders do not collide.

Each result is written as it comes: the slide's JSON first (atomically, ``magnet.atomic``), then its row
appended to ``predictions.csv`` and flushed to disk, so a slide costs one line of writing however large
the cohort (rewriting the table per slide made a run quadratic in its size). A kill loses at most the
slides in flight: a JSON without its CSV row is simply written again, and a row cut short by the kill (no
line end) is dropped when the table is read. A failed slide gets a row with an empty probability and its
one-line ``error``, and no JSON. The table is rewritten whole (atomically) only when a run starts on a
table that needs it (a cut row, a slide listed twice) and when a run ends after retrying slides.

**Resume.** A second run with the same ``--out`` skips the slides whose row has a probability (slides are
matched by ``slide_identity``: a file by its real path, a URI by its canonical spelling). Failed slides are
skipped too unless ``retry_failed``; a retried slide's new row is appended and, once read or compacted,
replaces the old one where it stood (the last row of a slide wins). Rows of slides that a
run does not name are kept. A folder holding another checkpoint's predictions is refused (mixing two models
in one table is never what a cohort wants), and so is a folder another ``magnet predict`` is writing to
(an OS file lock, released when the process ends, as ``magnet.training.run_folder`` does for runs).

**Several processes.** A store opened for rank ``k`` of ``n > 1`` (``magnet.evaluation.ranks``) records to
its own table, ``predictions.rank<k>.csv``, and rank 0 merges them into ``predictions.csv`` at the end
(``magnet.evaluation.cohort_parts``: who locks what, and the merge rule). Only rank 0 reads the folder,
plans the run and binds the checkpoint; the other ranks lock their own table and write their slides. A
table a killed multi-process run left is merged by the next run's ``plan``, whatever its number of
processes; a one-process run on a folder without such tables writes exactly the files it always did.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from magnet import strict_json
from magnet.atomic import atomic_write_text
from magnet.errors import MagnetError
from magnet.evaluation.cohort_parts import leftover_parts, merge_rows, part_table, rank_lock, rank_locks
from magnet.evaluation.reports import csv_lines, write_predictions_csv
from magnet.outputs import lock_file, lock_folder, output_folder
from magnet.slides.names import stable_slide_name
from magnet.slides.registry import slide_identity

__all__ = ["COLUMNS", "CohortPlan", "CohortStore"]

COLUMNS = ("slide", "probability", "seconds", "error")
CSV_FILE = "predictions.csv"
SLIDES_FOLDER = "slides"
CHECKPOINT_FILE = "checkpoint.json"
Row = dict[str, Any]


@dataclass
class CohortPlan:
    """What a run over a cohort has to do: ``todo`` slides, and those skipped because a row holds them."""

    todo: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # predicted by an earlier run
    failed: list[str] = field(default_factory=list)  # failed in an earlier run, not retried


class CohortStore:
    """The folder ``OUT`` of a cohort's predictions (see the module doc): ``claim`` it, ``bind`` it to the
    checkpoint, ``plan`` the run, ``record`` each result, ``release`` it at the end; under several ranks,
    ``merge`` the rows of every rank at the end (rank 0)."""

    def __init__(self, folder: str | os.PathLike[str], *, rank: int = 0, world_size: int = 1) -> None:
        self.folder = Path(folder)
        self.csv = self.folder / CSV_FILE
        self.slides = self.folder / SLIDES_FOLDER
        self.rank, self.world_size = rank, world_size
        # Where ``record`` writes: the cohort's table, or under several ranks this rank's own.
        self.table = self.csv if world_size == 1 else part_table(self.folder, rank)
        self._rows: dict[str, Row] = {}  # slide identity -> CSV row, in file order (rank 0's view)
        self._recorded: dict[str, Row] = {}  # this run's rows, in the order recorded
        self._leftovers: list[Path] = []  # part tables of a multi-process run that did not end
        self._lock: FileLock | None = None
        self._retried = False  # a slide of the table recorded again (a retry): ``finish`` compacts

    # --- opening ---------------------------------------------------------------------------------
    def claim(self) -> None:
        """Create (or check) the folder and lock it; read what earlier runs recorded (rank 0).

        One-line ``MagnetError`` when the folder cannot be written, is being written by another run or holds
        a ``predictions.csv`` that is not ours. A rank above 0 locks only its own table, after rank 0 has
        claimed the folder (so a second run is refused by rank 0 before any of its ranks writes).
        """
        output_folder(self.folder)
        output_folder(self.slides)
        busy = (f"{self.folder}: another magnet predict is writing to this folder; wait for it to end or "
                "give another --out")
        if self.rank > 0:
            self._lock = lock_file(rank_lock(self.folder, self.rank), busy)
            return
        self._lock = lock_folder(self.folder, busy)
        try:
            for path in rank_locks(self.folder):  # a rank of a run whose rank 0 died may still be writing
                lock_file(path, busy).release()
            self._rows, untidy = self._read_table(self.csv)
            if untidy:  # a cut last row or a slide twice: appending must start from a whole table
                self._write(self.csv, self._rows.values())
            self._leftovers = leftover_parts(self.folder)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def bind(self, checkpoint: str | os.PathLike[str]) -> None:
        """Record which checkpoint the predictions come from; refuse (one line) a folder holding another's.

        Identity is the checkpoint's bytes (SHA-256), so a moved or copied checkpoint is the same one.
        """
        record = {"checkpoint": str(Path(checkpoint).resolve()), "sha256": _sha256(Path(checkpoint))}
        path = self.folder / CHECKPOINT_FILE
        if path.exists():
            try:
                earlier = json.loads(path.read_text(encoding="utf-8"))
                digest = earlier["sha256"]
            except (OSError, ValueError, KeyError, TypeError):
                raise MagnetError(f"{path}: not a magnet predict record (delete it, or give another "
                                  "--out)") from None
            if digest != record["sha256"]:
                raise MagnetError(f"{self.folder}: holds the predictions of another checkpoint "
                                  f"({earlier.get('checkpoint')}); give another --out")
        elif self.csv.exists():
            raise MagnetError(f"{self.csv}: was not written by magnet predict --out (no {CHECKPOINT_FILE} "
                              "beside it); give another --out")
        atomic_write_text(path, strict_json.dumps(record, indent=1) + "\n")

    @staticmethod
    def _read_table(path: Path) -> tuple[dict[str, Row], bool]:
        """The rows of a table by slide identity (the last row of a slide wins, in the place of its first),
        and whether the file needs rewriting: a row cut short by a kill (dropped) or a slide listed twice."""
        if not path.exists():
            return {}, False
        try:
            text = path.read_text(encoding="utf-8")
            whole = text[: text.rfind("\n") + 1]  # a last line without its line end was cut by a kill
            reader = csv.DictReader(io.StringIO(whole, newline=""))
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise MagnetError(f"{path}: expected the columns {','.join(COLUMNS)}, found "
                                  f"{','.join(reader.fieldnames or ()) or 'none'}")
            raw = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise MagnetError(f"{path}: cannot be read ({exc})") from None
        rows: dict[str, Row] = {}
        for line, cells in enumerate(raw, start=2):
            try:
                row = {"slide": cells["slide"], "probability": _number(cells["probability"]),
                       "seconds": _number(cells["seconds"]), "error": cells["error"] or ""}
            except (ValueError, TypeError):
                raise MagnetError(f"{path}: row {line}: probability and seconds must be numbers") from None
            if not row["slide"] or (row["probability"] is None and not row["error"]):
                raise MagnetError(f"{path}: row {line}: a row needs a slide and a probability or an error")
            rows[slide_identity(cells["slide"])] = row
        return rows, len(whole) < len(text) or len(rows) < len(raw)

    # --- a run -----------------------------------------------------------------------------------
    def plan(self, slides: list[str], *, retry_failed: bool = False) -> CohortPlan:
        """Which of ``slides`` this run predicts, and which it skips (see the module doc; rank 0).

        The part tables a killed multi-process run left are merged into ``predictions.csv`` first (their
        new slides in the order of ``slides``), and removed.
        """
        if self._leftovers:
            left = [row for path in self._leftovers for row in self._read_table(path)[0].values()]
            self._rows = merge_rows(self._rows, left, slides)
            self._write(self.csv, self._rows.values())
            self._remove(self._leftovers)
            self._leftovers = []
        plan = CohortPlan()
        for spec in slides:
            row = self._rows.get(slide_identity(spec))
            if row is None:
                plan.todo.append(spec)
            elif not row["error"]:
                plan.done.append(spec)
            elif retry_failed:
                plan.todo.append(spec)
            else:
                plan.failed.append(spec)
        return plan

    def json_path(self, spec: str) -> Path:
        """Where the JSON of slide ``spec`` goes."""
        return self.slides / f"{stable_slide_name(spec, slide_identity(spec))}.json"

    def record(self, prediction: dict[str, Any]) -> None:
        """Write one slide's result (``SlidePrediction`` as a dict): its JSON, then its CSV row (in this
        rank's own table under several ranks)."""
        spec = prediction["slide"]
        probability = prediction["probability"]
        error = " ".join(str(prediction["error"]).split())
        if not error and not math.isfinite(probability):
            error = "no probability"
        if not error:
            path = self.json_path(spec)
            try:
                atomic_write_text(path, strict_json.dumps(prediction, indent=1) + "\n")
            except OSError as exc:
                raise self._cannot_write(path, exc) from None
        row = {"slide": spec, "probability": None if error else probability,
               "seconds": prediction["seconds"], "error": error}
        key = slide_identity(spec)
        self._retried |= key in self._rows or key in self._recorded
        self._recorded[key] = row
        if self.world_size == 1:
            self._rows[key] = row
        self._append(self.table, row)

    def finish(self) -> None:
        """End of a one-process run: a table holding a retried slide twice is rewritten with its last row."""
        if self.world_size == 1 and self._retried:
            self._write(self.csv, self._rows.values())
            self._retried = False

    def recorded(self) -> list[Row]:
        """The rows this process recorded in this run, in the order recorded."""
        return list(self._recorded.values())

    def merge(self, rows: Iterable[Row], order: Sequence[str]) -> None:
        """Merge every rank's ``rows`` of this run into ``predictions.csv`` and remove the part tables (rank
        0, once the ranks are done; ``order``: the run's slides, the order new rows take)."""
        self._rows = merge_rows(self._rows, rows, order)
        self._write(self.csv, self._rows.values())
        self._remove([part_table(self.folder, rank) for rank in range(self.world_size)])

    def _write(self, path: Path, rows: Iterable[Row]) -> None:
        try:
            write_predictions_csv(rows, path)
        except OSError as exc:
            raise self._cannot_write(path, exc) from None

    def _append(self, path: Path, row: Row) -> None:
        """One row at the end of ``path`` (a new file gets the header first), flushed to disk."""
        text = csv_lines([row], COLUMNS, header=not path.exists() or path.stat().st_size == 0)
        try:
            with path.open("a", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise self._cannot_write(path, exc) from None

    def _cannot_write(self, path: Path, exc: OSError) -> MagnetError:
        """The one line for a write that failed (a full disk, a folder removed under the run)."""
        return MagnetError(f"{path}: cannot write ({exc.strerror or exc}); the slides done before are in "
                           f"{self.table}")

    @staticmethod
    def _remove(paths: Iterable[Path]) -> None:
        """Remove merged part tables; one that cannot be removed is merged again by the next run."""
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def rows(self) -> list[dict[str, Any]]:
        """The rows of ``predictions.csv`` as recorded so far (earlier runs' included), in file order."""
        return list(self._rows.values())

    def row(self, spec: str) -> dict[str, Any] | None:
        """The row of slide ``spec``, or None."""
        return self._rows.get(slide_identity(spec))


def _number(text: str | None) -> float | None:
    return None if text is None or not text.strip() else float(text)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise MagnetError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    return digest.hexdigest()
