"""The merge of the tables of a multi-process ``magnet predict``: one row per slide, a probability never
replaced by an error, new slides in the order of the run, whatever the order the ranks finished in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magnet.evaluation.cohort_parts import leftover_parts, merge_rows, part_table, rank_lock, rank_locks
from magnet.slides.registry import slide_identity


def _row(slide: str, probability: float | None = 0.5, error: str = "") -> dict[str, Any]:
    return {"slide": slide, "probability": probability, "seconds": 1.0, "error": error}


def _table(*rows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {slide_identity(r["slide"]): r for r in rows}


def test_new_slides_take_the_order_of_the_run_and_old_rows_keep_their_place(tmp_path: Path) -> None:
    old_uri, png = "synth:seed=9", str(tmp_path / "b.png")
    a, c, d, unnamed = (f"synth:seed={seed}" for seed in (1, 3, 4, 5))
    old = _table(_row(old_uri), _row(png))
    # The ranks' rows as they came (rank 1 first); the run named c, a, png, d; a leftover row names another.
    later = [_row(d), _row(unnamed), _row(c), _row(png, 0.7)]
    merged = merge_rows(old, later, [c, a, png, d])
    assert [r["slide"] for r in merged.values()] == [old_uri, png, c, d, unnamed]
    assert merged[slide_identity(png)]["probability"] == 0.7  # replaced in its place
    assert [r["slide"] for r in old.values()] == [old_uri, png]  # the table given is not changed


def test_one_row_per_slide_and_an_error_never_replaces_a_probability(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    old = _table(_row(str(png), 0.25), _row("synth:seed=2", None, "failed once"))
    later = [_row(str(tmp_path / "." / "a.png"), None, "failed later"),  # another spelling of one slide
             _row("synth:seed=2", None, "failed again"),
             _row("synth:seed=3", None, "failed"), _row("synth:seed=3", 0.5), _row("synth:seed=3", None, "x")]
    merged = merge_rows(old, later)
    assert len(merged) == 3
    assert merged[slide_identity(str(png))]["probability"] == 0.25
    assert merged[slide_identity("synth:seed=2")]["error"] == "failed again"  # a later error replaces one
    assert merged[slide_identity("synth:seed=3")] == _row("synth:seed=3", 0.5)


def test_part_tables_and_rank_locks_are_found_by_rank(tmp_path: Path) -> None:
    for rank in (10, 2, 0):
        part_table(tmp_path, rank).write_text("")
        rank_lock(tmp_path, rank).write_text("")
    (tmp_path / "predictions.csv").write_text("")
    (tmp_path / "predictions.rankx.csv").write_text("")
    assert leftover_parts(tmp_path) == [part_table(tmp_path, r) for r in (0, 2, 10)]
    assert rank_locks(tmp_path) == [rank_lock(tmp_path, r) for r in (0, 2, 10)]
