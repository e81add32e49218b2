"""Slide-level metrics in the layout of the paper's Table 1 (paper §5, docs/method.md §5).

Table 1 reports AUROC per metastasis class: Macro, Micro, ITC, Macro & Micro, All. Each column is the AUROC
of **all negative** slides against the positives of that class (docs/method.md §5); "All" takes every
positive, including those whose class is unknown. A column is ``None`` when it has no positives or there
are no negatives (an AUROC is undefined there, and 0.5 would be a lie).

Intervals: percentile bootstrap, stratified (positives and negatives are resampled separately, each with
its own size), so every replicate has both classes and the AUROC is always defined. 1000 replicates by
default. docs/method.md §7 warns that with a dozen positives per class the AUROC swings by about ±0.09; the
intervals make that visible.

AUROC is computed from ranks (the Mann–Whitney U statistic divided by ``n_pos * n_neg``, ties counted
half), which equals the trapezoidal area under the ROC curve (Hanley & McNeil, Radiology 1982).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from magnet.data.lesions import LESION_CLASSES, UNKNOWN_POSITIVE

#: Table 1 columns: key in ``table1``'s result, title, lesion classes counted as positive (None: all).
TABLE1_COLUMNS: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("macro", "Macro", ("macro",)),
    ("micro", "Micro", ("micro",)),
    ("itc", "ITC", ("itc",)),
    ("macro_micro", "Macro & Micro", ("macro", "micro")),
    ("all", "All", None),
)


def _labels_and_scores(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as equal-length flat arrays; ``ValueError`` on a mismatch or a non-finite score."""
    y = as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    return y, s


def auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 positive, 0 negative).

    Raises ``ValueError`` when one class is missing (the area is undefined) or a score is not finite.
    """
    y, s = _labels_and_scores(labels, scores)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"AUROC needs positives and negatives (got {len(pos)} and {len(neg)})")
    return auroc_pos_neg(pos, neg)


def auroc_pos_neg(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half P(equal), by counting over the sorted negatives."""
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    not_above = np.searchsorted(neg_sorted, pos, side="right")
    wins = below.sum() + 0.5 * (not_above - below).sum()
    return float(wins / (len(pos) * len(neg)))


def as_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.dtype == np.bool_:
        return y.astype(np.int64)
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 or 1")
    return y.astype(np.int64)


def bootstrap_auroc_ci(
    pos: np.ndarray, neg: np.ndarray, *, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float]:
    """95 % percentile interval of the AUROC, positives and negatives resampled separately."""
    values = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        pos_b = pos[rng.integers(0, len(pos), len(pos))]
        neg_b = neg[rng.integers(0, len(neg), len(neg))]
        values[b] = auroc_pos_neg(pos_b, neg_b)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def table1(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    lesion_classes: Sequence[str | None] | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC per Table-1 column with bootstrap intervals; JSON-ready.

    Returns ``{"macro": {...}, "micro": {...}, "itc": {...}, "macro_micro": {...}, "all": {...},
    "n_slides": N}`` where each column is ``{"auroc": float | None, "ci95": [lo, hi] | None,
    "n_pos": int, "n_neg": int}``. ``lesion_classes`` gives ``negative``, ``macro``, ``micro``, ``itc``,
    or ``None`` / ``positive`` (a positive of unknown class: counted in "All" only) per slide; omitted,
    only "All" is defined. ``n_bootstrap=0`` skips the intervals. Each column draws its replicates from its
    own seeded stream, so a column's interval does not depend on the others.
    """
    y, s = _labels_and_scores(labels, scores)
    given: Sequence[str | None] = [None] * len(y) if lesion_classes is None else lesion_classes
    classes = [c.lower() if c else None for c in given]
    if len(classes) != len(y):
        raise ValueError(f"{len(y)} labels but {len(classes)} lesion classes")
    for i, (label, cls) in enumerate(zip(y, classes, strict=True)):
        if cls is not None and cls not in (*LESION_CLASSES, UNKNOWN_POSITIVE):
            raise ValueError(f"slide {i}: unknown lesion class {cls!r}")
        if (label == 1 and cls == "negative") or (label == 0 and cls not in (None, "negative")):
            raise ValueError(f"slide {i}: label {label} contradicts lesion class {cls!r}")

    cls_array = np.array([c or "" for c in classes], dtype=object)
    neg = s[y == 0]
    result: dict[str, Any] = {}
    for column, (key, _title, members) in enumerate(TABLE1_COLUMNS):
        is_pos = (y == 1) if members is None else (y == 1) & np.isin(cls_array, members)
        pos = s[is_pos]
        entry: dict[str, Any] = {"auroc": None, "ci95": None, "n_pos": int(len(pos)), "n_neg": int(len(neg))}
        if len(pos) and len(neg):
            entry["auroc"] = auroc_pos_neg(pos, neg)
            if n_bootstrap > 0:
                rng = np.random.default_rng([seed, column])
                lo, hi = bootstrap_auroc_ci(pos, neg, n_bootstrap=n_bootstrap, rng=rng)
                entry["ci95"] = [lo, hi]
        result[key] = entry
    result["n_slides"] = int(len(y))
    return result


def format_table1(result: Mapping[str, Any], *, name: str = "model", decimals: int = 0) -> str:
    """Text table in the layout of the paper's Table 1 (AUROC in %), with intervals and counts below.

    "–" marks an undefined column, as in the paper.
    """
    titles = [title for _, title, _ in TABLE1_COLUMNS]

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.{decimals}f} %"

    def interval(ci: Sequence[float] | None) -> str:
        return "–" if ci is None else f"{100 * ci[0]:.{decimals}f}–{100 * ci[1]:.{decimals}f}"

    lines = [
        [name, *(pct(result[key]["auroc"]) for key, _, _ in TABLE1_COLUMNS)],
        ["  95 % CI", *(interval(result[key]["ci95"]) for key, _, _ in TABLE1_COLUMNS)],
        ["  positives", *(str(result[key]["n_pos"]) for key, _, _ in TABLE1_COLUMNS)],
    ]
    header = ["", *titles]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    n_neg, n_slides = result["all"]["n_neg"], result["n_slides"]
    footer = f"AUROC of all {n_neg} negative slides against each column's positives; {n_slides} slides."
    return "\n".join([render(header), *(render(row) for row in lines), footer])


def table1_by_group(
    groups: Sequence[str | None],
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    lesion_classes: Sequence[str | None] | None = None,
    *,
    n_bootstrap: int = 1000,
) -> dict[str, dict[str, Any]]:
    """``table1`` of each group's slides (e.g. per centre), by group name; slides of no group are left out.

    A group with positives but no negatives (or the reverse) gets ``None`` columns, as ``table1`` does:
    per-class columns need each class's positives in that group.
    """
    y, s = _labels_and_scores(labels, scores)
    classes = [None] * len(y) if lesion_classes is None else list(lesion_classes)
    if not (len(groups) == len(y) == len(classes)):
        raise ValueError(f"{len(groups)} groups, {len(y)} labels and {len(classes)} lesion classes")
    result: dict[str, dict[str, Any]] = {}
    for name in sorted({g for g in groups if g}):
        members = [i for i, g in enumerate(groups) if g == name]
        result[name] = table1(y[members], s[members], [classes[i] for i in members], n_bootstrap=n_bootstrap)
    return result


def format_by_group(by_group: Mapping[str, Mapping[str, Any]], *, title: str = "centre") -> str:
    """One line per group: its AUROC per Table-1 column (– where undefined) and its slide count."""
    lines = []
    for name, result in by_group.items():
        cells = "  ".join(
            f"{label} " + ("–" if result[key]["auroc"] is None else f"{result[key]['auroc']:.3f}")
            for key, label, _ in TABLE1_COLUMNS
        )
        lines.append(f"{title} {name} ({result['n_slides']} slides): {cells}")
    return "\n".join(lines)
