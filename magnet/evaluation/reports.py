"""Evaluation outputs: ``roc.png``, ``predictions.csv``, ``metrics.json``, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from magnet import strict_json
from magnet.atomic import atomic_path, atomic_write_text
from magnet.metrics.auroc import TABLE1_COLUMNS, as_labels, auroc_pos_neg


def save_roc_png(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    lesion_classes: Sequence[str | None] | None = None,
    title: str = "ROC",
) -> None:
    """ROC curve(s) as a PNG (atomic). With ``lesion_classes``, one curve per Table-1 column that exists."""
    y = as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.array(
        [""] * len(y) if lesion_classes is None else [(c or "").lower() for c in lesion_classes], dtype=object
    )
    # No pyplot: a Figure with its own Agg canvas touches no global state and needs no display.
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    columns = TABLE1_COLUMNS if lesion_classes is not None else TABLE1_COLUMNS[-1:]
    for _key, name, members in columns:
        is_pos = (y == 1) if members is None else (y == 1) & np.isin(classes, members)
        keep = is_pos | (y == 0)
        if not is_pos.any() or not (y == 0).any():
            continue
        fpr, tpr, _ = roc_curve(is_pos[keep].astype(int), s[keep])
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc_pos_neg(s[is_pos], s[y == 0]):.2f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_predictions_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """One CSV line per slide (e.g. slide, probability, label, lesion_class), atomically.

    Columns are the keys of the rows in first-seen order; floats keep full precision (``repr``).
    """
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    atomic_write_text(path, csv_lines(rows, columns), newline="")


def csv_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, header: bool = True) -> str:
    """``rows`` as CSV text in ``columns`` (a missing key empty), after a header line when ``header``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(key)) for key in columns])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    """A value as its CSV text: None empty, floats at full precision (``repr``)."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def write_metrics_json(result: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """``result`` (e.g. from ``table1``) as indented strict JSON, atomically (an undefined number: null)."""
    atomic_write_text(path, strict_json.dumps(result, indent=2) + "\n")


def read_metrics_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read back a ``metrics.json``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
