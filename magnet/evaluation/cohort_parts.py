"""The tables of a cohort predicted by several processes, and the one rule that merges them into one.

Under several ranks (``magnet.evaluation.ranks``) each rank writes the rows of its own slides to a table of
its own, ``predictions.rank<k>.csv`` beside ``predictions.csv``, so that no two processes ever rewrite one
file (each rewrite would drop the rows the other had just added). Each rank also holds a lock of its own,
``.magnet.rank<k>.lock``, while rank 0 holds the folder's: a second run on the folder is refused by
whichever it meets. When every rank is done, rank 0 merges the rows into ``predictions.csv`` and removes
the part tables; a run killed before that leaves them, and the next run on the folder (with any number of
processes, one too) merges them before it plans.

The merge (``merge_rows``) keeps one row per slide (slides matched by ``slide_identity``). A later row
replaces an earlier one where it stands, as a retried slide's does in a one-process run, except that an
error never replaces a probability: the slide was predicted, and what a later attempt met changes nothing.
Slides new to the table are appended in the order of the run's slides (those the run does not name come
last, as they arrived), so the table of a multi-process run reads like that of one process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from magnet.slides.registry import slide_identity

__all__ = ["leftover_parts", "merge_rows", "part_table", "rank_lock", "rank_locks"]

Row = dict[str, Any]
_PART = re.compile(r"predictions\.rank(\d+)\.csv")
_RANK_LOCK = re.compile(r"\.magnet\.rank(\d+)\.lock")


def part_table(folder: Path, rank: int) -> Path:
    """The table rank ``rank`` writes its rows to during a multi-process run."""
    return folder / f"predictions.rank{rank}.csv"


def rank_lock(folder: Path, rank: int) -> Path:
    """The lock file rank ``rank`` (above 0: rank 0 holds the folder's own) holds while it writes."""
    return folder / f".magnet.rank{rank}.lock"


def leftover_parts(folder: Path) -> list[Path]:
    """The part tables in ``folder``, by rank: what a multi-process run left when it did not end."""
    return _by_rank(folder, _PART)


def rank_locks(folder: Path) -> list[Path]:
    """The rank lock files in ``folder``, by rank (they stay after their run, like every lock file)."""
    return _by_rank(folder, _RANK_LOCK)


def _by_rank(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


def merge_rows(table: Mapping[str, Row], later: Iterable[Row], order: Sequence[str] = ()) -> dict[str, Row]:
    """``table`` (slide identity -> row, in table order) with the rows ``later`` merged in (see the module
    doc); ``order``: the run's slides, the order new rows take."""
    merged = dict(table)
    new: dict[str, Row] = {}
    for row in later:
        key = slide_identity(row["slide"])
        into = merged if key in merged else new
        kept = into.get(key)
        if kept is None or not row["error"] or kept["error"]:
            into[key] = row  # a dict keeps a replaced key where it stood
    place = {slide_identity(spec): i for i, spec in enumerate(order)}
    for key in sorted(new, key=lambda k: place.get(k, len(place))):  # stable: unnamed slides as they came
        merged[key] = new[key]
    return merged
