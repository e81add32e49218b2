"""A run folder has one owner, and ``--resume`` continues the run it claims to continue.

**One owner.** Two trainings writing into one folder would interleave their checkpoints and logs: a
``last.ckpt`` of one run beside the ``best.ckpt`` and ``metrics.csv`` of the other, and both reporting
success. So a run holds an OS file lock on ``RUN/.magnet.lock`` (``filelock``) from before it reads
anything in the folder until it ends; a second run on the folder is refused at once with one line. The lock
is released by the OS when the process dies, so a killed run never leaves the folder locked; the lock file
itself stays (removing it would race with the next owner) and means nothing on its own.

**Same run.** A checkpoint carries the config it was trained with. Resuming with a different model is
impossible (the weights do not fit, ``magnet.training.loop``); resuming with different data, seed,
optimiser or loss settings is possible but gives a run that is neither the old one nor a new one, so it is
refused unless the caller allows it (``--allow-changes``). The keys that only choose hardware or reading
machinery (``FREE_ON_RESUME``) may change freely: moving a run to another machine is not a change of run.
The data are compared by the rows the run trains and validates on (``data_fingerprint``), not by the
manifest's file name, so an edited manifest under the same name counts as a change, and a moved one does not.

**History.** ``RUN/history.jsonl`` gets one JSON line per start and resume (time, command line, epoch, and
the accepted changes), so a folder says how its checkpoints came to be.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from magnet import strict_json
from magnet.atomic import atomic_write_text
from magnet.data.manifest import ManifestRow
from magnet.errors import ConfigError
from magnet.outputs import LOCK_FILE, lock_folder, output_folder

__all__ = [
    "FREE_ON_RESUME", "HISTORY_FILE", "LOCK_FILE", "RunFolder", "data_fingerprint", "refuse_changes",
    "resume_changes",
]

HISTORY_FILE = "history.jsonl"
# Dotted keys that choose where and how fast a run computes, or how it reacts to unreadable slides, not what
# it learns; ``model.*`` is compared on its own (a different model cannot load the weights at all).
FREE_ON_RESUME = frozenset({
    "accelerator", "devices", "num_nodes", "strategy", "precision",
    "data.reader_threads", "data.max_open_slides", "data.skip_bad", "data.max_failed_share", "data.manifest",
})


class RunFolder:
    """The run folder ``path``: ``claim()`` creates and locks it, ``release()`` unlocks it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None
        self._created = False

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    def claim(self) -> None:
        """Create the folder if needed (refused with one line if it cannot be written) and lock it."""
        self._created = not self.path.exists()
        output_folder(self.path)
        self._lock = lock_folder(self.path, f"{self.path}: another magnet run is using this folder; wait for "
                                            "it to end or train into another --out")

    def release(self, *, tidy: bool = False) -> None:
        """Unlock. ``tidy``: a run that failed before writing anything removes the folder it created."""
        if self._lock is None:
            return
        self._lock.release()
        self._lock = None
        if tidy and self._created and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self.path.rmdir()

    def record(self, event: str, **details: Any) -> None:
        """Append one line to ``history.jsonl`` (the whole file is rewritten atomically)."""
        old = self.history.read_text(encoding="utf-8") if self.history.exists() else ""
        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "event": event,
                 "command": " ".join(sys.argv), **details}
        atomic_write_text(self.history, old + strict_json.dumps(entry) + "\n")


def data_fingerprint(rows_by_split: Mapping[str, Sequence[ManifestRow]]) -> dict[str, str]:
    """Per split, the number of rows and a digest of their slides, labels and order: ``"12 rows, 1a2b3c4d"``.

    Order counts: the epoch permutation indexes the training rows, so reordered rows train differently.
    """
    out = {}
    for split, rows in rows_by_split.items():
        digest = hashlib.sha256("\n".join(f"{r.slide}\t{r.label}" for r in rows).encode()).hexdigest()
        out[split] = f"{len(rows)} rows, {digest[:12]}"
    return out


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any], saved_data: Mapping[str, str] | None,
    current_data: Mapping[str, str],
) -> dict[str, list[Any]]:
    """``{dotted key: [saved, current]}`` for every difference that changes what a resumed run learns.

    ``saved`` and ``current`` are config dicts (``model`` is left out: it is compared elsewhere);
    ``*_data`` are ``data_fingerprint``s (checkpoints written before fingerprints existed have none).
    """
    # Without a saved fingerprint (older checkpoints) the manifest's name is all there is to compare.
    free = FREE_ON_RESUME if saved_data is not None else FREE_ON_RESUME - {"data.manifest"}
    old = {k: v for k, v in _flatten(saved).items() if not k.startswith("model.")}
    new = {k: v for k, v in _flatten(current).items() if not k.startswith("model.")}
    changes = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
               if k not in free and old.get(k) != new.get(k)}
    for split, now in current_data.items():
        before = (saved_data or {}).get(split)
        if saved_data is not None and before != now:
            changes[f"{split} rows"] = [before, now]
    return changes


def refuse_changes(checkpoint: Path, changes: Mapping[str, list[Any]], history: Path) -> ConfigError:
    """The one-line refusal of a resume whose config changed."""
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    return ConfigError(f"{checkpoint}: resuming with a changed config ({listed}); add --allow-changes to "
                       f"continue with it (recorded in {history}) or train into another --out")
