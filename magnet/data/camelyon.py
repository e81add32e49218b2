"""Camelyon16 / Camelyon17 adapters: manifest rows from the official file layouts, and the split protocols.

Layouts read (as distributed by the challenges; only file names and label files are used, no pixels):

- Camelyon16: ``training/normal/normal_NNN.tif`` (label 0), ``training/tumor/tumor_NNN.tif`` (label 1, size
  class unknown: the training set comes with outlines, not classes), ``testing/images/test_NNN.tif`` with
  labels in ``testing/reference.csv``: rows ``test_001,Tumor,Macro,...`` or ``test_002,Normal,...``.
- Camelyon17: ``patient_PPP_node_N.tif`` anywhere under the root (usually in ``center_C/`` folders, whose
  number ``C`` becomes the row's ``centre``, 0..4) with
  ``stage_labels.csv``: rows ``patient_000_node_0.tif,negative|itc|micro|macro``; the per-patient rows
  ``patient_000.zip,pN0`` are ignored. Only labelled slides are used (the challenge's test patients have
  no public labels).
  Camelyon16 rows get no ``centre`` (an empty cell): its slides come from two hospitals (Litjens et al.
  2018), but the files read here carry no centre field, and we do not guess one from slide numbers.

Protocols (``build_camelyon_manifest``):

- ``"paper"`` (paper §4, docs/method.md §5): 25 % of Camelyon17 is the test set, stratified by lesion
  class; the rest of Camelyon17 is pooled with *all* of Camelyon16 (training and testing folders: the paper
  counts 238 normal and 160 tumour Camelyon16 slides, i.e. both) and split 80/20 into train and validation,
  stratified by class; ITC slides are dropped from train and validation (kept in test), as in the paper.
  Our choice: both splits keep a patient's lymph nodes on one side (``group_by_patient=True``), because
  nodes of one patient share staining and often the tumour; a greedy search over patients keeps every
  class within about one or two slides of its 25 % (or 20 %) target (see ``stratified_group_holdout``).
  The paper does not say how it split; ``group_by_patient=False`` gives a slide-level stratified split.
- ``"c16_official"``: Camelyon16's own split. The official training folder is divided 80/20 into train and
  validation (stratified by label; the training loop needs a validation split to choose the best
  checkpoint, and the official release has none); the official testing folder is the test set.

Sources: Camelyon16 and Camelyon17 data descriptions (Litjens et al., GigaScience 2018), the file layout as
listed in public dataset documentation (e.g. kaiko-ai/eva ``docs/datasets/camelyon16.md``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from magnet.data.lesions import LESION_CLASSES
from magnet.data.manifest import ManifestRow
from magnet.errors import MagnetError

Protocol = Literal["paper", "c16_official"]

# Paper §4 / docs/method.md §5.
PAPER_TEST_FRACTION = 0.25
PAPER_VALIDATION_FRACTION = 0.2

_SLIDE_SUFFIXES = (".tif", ".tiff")
_C17_NODE = re.compile(r"^patient_(\d+)_node_(\d+)$", re.IGNORECASE)
_CENTER_DIR = re.compile(r"^center_(\d+)$", re.IGNORECASE)
_MAX_LISTED = 20


# --- Camelyon16 ---------------------------------------------------------------------------------------


def camelyon16_rows(
    root: str | os.PathLike[str], *, reference_csv: str | os.PathLike[str] | None = None
) -> list[ManifestRow]:
    """All Camelyon16 slides under ``root``, without splits; ``extra['official_split']`` says where
    each came from (``training`` or ``testing``). Test labels come from ``reference_csv`` (default:
    ``testing/reference.csv``, or ``reference.csv`` at the root)."""
    base = Path(root)
    normal = _slides_in(base / "training" / "normal")
    tumor = _slides_in(base / "training" / "tumor")
    test = _slides_in(base / "testing" / "images")
    if not (normal or tumor or test):
        raise MagnetError(
            f"{base}: no Camelyon16 slides found (expected training/normal/*.tif, training/tumor/*.tif, "
            "testing/images/*.tif)"
        )
    rows = [_c16_row(path, 0, "negative", "training") for path in normal]
    rows += [_c16_row(path, 1, None, "training") for path in tumor]
    if test:
        reference = _find_file(base, reference_csv, ["testing/reference.csv", "reference.csv"])
        labels = _read_c16_reference(reference)
        problems = []
        found = set()
        for path in test:
            key = path.stem.lower()
            if key not in labels:
                problems.append(f"{path.name} has no label")
                continue
            found.add(key)
            label, lesion_class = labels[key]
            rows.append(_c16_row(path, label, lesion_class, "testing"))
        problems += [f"{name}.tif is labelled but missing" for name in sorted(set(labels) - found)]
        if problems:
            raise MagnetError(f"{base}: Camelyon16 test set and its reference disagree: {_listing(problems)}")
    return rows


def _c16_row(path: Path, label: int, lesion_class: str | None, official_split: str) -> ManifestRow:
    # Each Camelyon16 slide is one patient's node; the stem makes a unique patient id.
    return ManifestRow(
        slide=os.path.abspath(path),
        label=label,
        lesion_class=lesion_class,
        patient=f"camelyon16_{path.stem.lower()}",
        extra={"dataset": "camelyon16", "official_split": official_split},
    )


def _read_c16_reference(path: Path) -> dict[str, tuple[int, str | None]]:
    """``reference.csv``: name, Tumor|Normal, then Macro|Micro for tumours (more columns ignored)."""
    labels: dict[str, tuple[int, str | None]] = {}
    problems = []
    for line, cells in _csv_rows(path):
        name = cells[0].strip()
        kind = cells[1].strip().lower() if len(cells) > 1 else ""
        key = re.sub(r"\.tiff?$", "", name, flags=re.IGNORECASE).lower()
        if line == 1 and kind not in ("tumor", "normal") and not re.match(r"test_\d+$", key):
            continue  # a header row
        if kind == "normal":
            labels[key] = (0, "negative")
        elif kind == "tumor":
            size = cells[2].strip().lower() if len(cells) > 2 else ""
            if size and size not in LESION_CLASSES[1:]:
                problems.append(f"row {line}: unknown lesion size {cells[2].strip()!r}")
            labels[key] = (1, size if size in LESION_CLASSES[1:] else None)
        else:
            problems.append(f"row {line}: expected Tumor or Normal (got {kind!r})")
    if problems:
        raise MagnetError(f"{path}: {_listing(problems)}")
    return labels


# --- Camelyon17 ---------------------------------------------------------------------------------------


def camelyon17_rows(
    root: str | os.PathLike[str], *, stage_labels: str | os.PathLike[str] | None = None
) -> list[ManifestRow]:
    """The labelled Camelyon17 slides under ``root`` (per-node classes from ``stage_labels.csv``)."""
    base = Path(root)
    candidates = ["stage_labels.csv", "training/stage_labels.csv"]
    labels_path = _find_file(base, stage_labels, candidates, search=True)
    files: dict[str, Path] = {}
    for path in sorted(base.rglob("*")):
        if path.suffix.lower() in _SLIDE_SUFFIXES and _C17_NODE.match(path.stem):
            files.setdefault(path.stem.lower(), path)

    rows = []
    problems = []
    for line, cells in _csv_rows(labels_path):
        name = cells[0].strip()
        stage = cells[1].strip().lower() if len(cells) > 1 else ""
        stem = re.sub(r"\.tiff?$", "", name, flags=re.IGNORECASE)
        node = _C17_NODE.match(stem)
        if node is None:
            continue  # header, or a patient row such as "patient_000.zip,pN1"
        if stage not in LESION_CLASSES:
            expected = ", ".join(LESION_CLASSES)
            problems.append(f"row {line}: unknown stage {stage!r} for {name} (expected {expected})")
            continue
        found = files.get(stem.lower())
        if found is None:
            problems.append(f"{name} is labelled but not found under {base}")
            continue
        path = found
        center = _CENTER_DIR.match(path.parent.name)
        extra = {"dataset": "camelyon17"}
        if center is not None:
            extra["centre"] = center.group(1)  # the manifest's centre column: per-centre metrics
        rows.append(
            ManifestRow(
                slide=os.path.abspath(path),
                label=0 if stage == "negative" else 1,
                lesion_class=stage,
                patient=f"camelyon17_patient_{node.group(1)}",
                extra=extra,
            )
        )
    if problems:
        raise MagnetError(f"{labels_path}: {_listing(problems)}")
    if not rows:
        example = "patient_000_node_0.tif,negative"
        raise MagnetError(f"{labels_path}: no slide rows (expected lines like {example})")
    return rows


# --- protocols ----------------------------------------------------------------------------------------


def build_camelyon_manifest(
    c16_root: str | os.PathLike[str] | None,
    c17_root: str | os.PathLike[str] | None,
    protocol: Protocol,
    seed: int,
    *,
    test_fraction: float = PAPER_TEST_FRACTION,
    validation_fraction: float = PAPER_VALIDATION_FRACTION,
    group_by_patient: bool = True,
) -> list[ManifestRow]:
    """Manifest rows with splits for ``protocol`` (see the module docstring), deterministic in ``seed``.

    ``paper`` needs ``c17_root`` (``c16_root`` may be None to pool Camelyon17 alone); ``c16_official``
    needs ``c16_root`` and ignores ``c17_root``.
    """
    if protocol == "paper":
        if c17_root is None:
            raise MagnetError("the paper protocol needs the Camelyon17 folder (its test set is Camelyon17)")
        c16 = camelyon16_rows(c16_root) if c16_root is not None else []
        return paper_split(
            c16,
            camelyon17_rows(c17_root),
            seed=seed,
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            group_by_patient=group_by_patient,
        )
    if protocol == "c16_official":
        if c16_root is None:
            raise MagnetError("the c16_official protocol needs the Camelyon16 folder")
        c16_rows = camelyon16_rows(c16_root)
        return c16_official_split(c16_rows, seed=seed, validation_fraction=validation_fraction)
    raise MagnetError(f"unknown Camelyon protocol {protocol!r} (expected paper or c16_official)")


def paper_split(
    c16: Sequence[ManifestRow],
    c17: Sequence[ManifestRow],
    *,
    seed: int,
    test_fraction: float = PAPER_TEST_FRACTION,
    validation_fraction: float = PAPER_VALIDATION_FRACTION,
    group_by_patient: bool = True,
) -> list[ManifestRow]:
    """The paper's protocol on given rows (docs/method.md §5): C17 test share, then pooled train / val."""
    c17 = sorted(c17, key=lambda r: r.slide)  # independent of file-system order
    c16 = sorted(c16, key=lambda r: r.slide)
    test_idx = stratified_group_holdout(
        [_stratum(r) for r in c17], _groups(c17, group_by_patient), test_fraction, seed
    )
    test = [dataclasses.replace(r, split="test") for i, r in enumerate(c17) if i in test_idx]
    # ITC is excluded from training and validation (paper §4); those slides leave the manifest.
    pooled = list(c16) + [r for i, r in enumerate(c17) if i not in test_idx and r.lesion_class != "itc"]
    val_idx = stratified_group_holdout(
        [_stratum(r) for r in pooled], _groups(pooled, group_by_patient), validation_fraction, seed + 1
    )
    train_val = [
        dataclasses.replace(r, split="validation" if i in val_idx else "train") for i, r in enumerate(pooled)
    ]
    return train_val + test


def c16_official_split(
    c16: Sequence[ManifestRow], *, seed: int, validation_fraction: float = PAPER_VALIDATION_FRACTION
) -> list[ManifestRow]:
    """Camelyon16's official split; its training folder divided into train and validation."""
    rows = sorted(c16, key=lambda r: r.slide)
    training = [r for r in rows if r.extra.get("official_split") == "training"]
    testing = [r for r in rows if r.extra.get("official_split") != "training"]
    val_idx = stratified_group_holdout(
        [_stratum(r) for r in training], list(range(len(training))), validation_fraction, seed
    )
    out = [_with_split(r, "validation" if i in val_idx else "train") for i, r in enumerate(training)]
    return out + [dataclasses.replace(r, split="test") for r in testing]


def _with_split(row: ManifestRow, split: str) -> ManifestRow:
    return dataclasses.replace(row, split=split)


def _stratum(row: ManifestRow) -> str:
    # Camelyon16 training tumours have no size class: they form their own stratum.
    return row.lesion_class or ("positive_unknown_class" if row.label == 1 else "negative")


def _groups(rows: Sequence[ManifestRow], by_patient: bool) -> list[Hashable]:
    if not by_patient:
        return list(range(len(rows)))
    return [r.patient if r.patient else ("slide", i) for i, r in enumerate(rows)]


def stratified_group_holdout(
    strata: Sequence[Hashable], groups: Sequence[Hashable], fraction: float, seed: int
) -> set[int]:
    """Indices of a held-out share ``fraction`` of the items, whole groups at a time, per-stratum counts
    close to ``fraction`` of each stratum.

    Cost: the squared relative miss of every stratum's target count, plus that of the total. A greedy pass
    over the groups in a seeded random order (larger groups first: they are the hard ones to place) is
    followed by local search (the best single add, removal or swap of a group, until none helps). With one
    item per group it is an ordinary stratified split. Deterministic in ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    if len(strata) != len(groups):
        raise ValueError("strata and groups differ in length")
    if not strata:
        return set()
    names = sorted(set(strata), key=str)
    column = {name: j for j, name in enumerate(names)}
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    counts = np.zeros((len(keys), len(names) + 1))  # last column: group size
    for k, g in enumerate(keys):
        for i in members[g]:
            counts[k, column[strata[i]]] += 1
        counts[k, -1] = len(members[g])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    order = order[np.argsort(-counts[order, -1], kind="stable")]
    keys = [keys[k] for k in order]
    counts = counts[order]

    target = counts.sum(axis=0) * fraction
    scale = np.maximum(target, 1.0)

    def cost(held: np.ndarray) -> np.ndarray:
        return (((held - target) / scale) ** 2).sum(axis=-1)

    inside = np.zeros(len(keys), dtype=bool)
    held = np.zeros(len(names) + 1)
    for k in range(len(keys)):
        if cost(held + counts[k]) < cost(held):
            inside[k] = True
            held += counts[k]
    for _ in range(4 * len(keys)):  # each step lowers the cost; the bound only guards against cycles
        now = float(cost(held))
        ins, outs = np.flatnonzero(inside), np.flatnonzero(~inside)
        moves: list[tuple[float, list[int], list[int]]] = []
        if len(outs):
            c = cost(held + counts[outs])
            moves.append((float(c.min()), [int(outs[c.argmin()])], []))
        if len(ins):
            c = cost(held - counts[ins])
            moves.append((float(c.min()), [], [int(ins[c.argmin()])]))
        if len(ins) and len(outs):
            c = cost(held - counts[ins][:, None, :] + counts[outs][None, :, :])
            a, b = np.unravel_index(int(c.argmin()), c.shape)
            moves.append((float(c[a, b]), [int(outs[b])], [int(ins[a])]))
        best = min(moves, key=lambda m: m[0])
        if best[0] >= now - 1e-12:
            break
        for k in best[1]:
            inside[k] = True
            held += counts[k]
        for k in best[2]:
            inside[k] = False
            held -= counts[k]
    return {i for k in np.flatnonzero(inside) for i in members[keys[int(k)]]}


# --- small helpers ------------------------------------------------------------------------------------


def _slides_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SLIDE_SUFFIXES)


def _find_file(
    base: Path, given: str | os.PathLike[str] | None, candidates: list[str], *, search: bool = False
) -> Path:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise MagnetError(f"{path}: no such label file")
        return path
    for rel in candidates:
        if (base / rel).is_file():
            return base / rel
    if search:
        found = sorted(base.rglob(Path(candidates[0]).name))
        if found:
            return found[0]
    raise MagnetError(f"{base}: label file not found (looked for {', '.join(candidates)})")


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MagnetError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(text.splitlines())
    return [(reader.line_num, cells) for cells in reader if cells and any(c.strip() for c in cells)]


def _listing(problems: Sequence[str]) -> str:
    more = len(problems) - _MAX_LISTED
    return "; ".join(problems[:_MAX_LISTED]) + (f"; ... and {more} more" if more > 0 else "")
