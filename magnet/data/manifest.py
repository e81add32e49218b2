"""The manifest CSV: the one input format of training, evaluation and baselines.

Columns (header names are matched without regard to case or surrounding spaces):

========================  ========  =========================================================================
column                    required  meaning
========================  ========  =========================================================================
``slide``                 yes       a file path (relative paths are relative to the manifest's folder) or
                                    a URI such as ``synth:seed=17,...`` that ``open_slide`` understands
``label``                 yes       ``0`` (no metastasis) or ``1`` (metastasis)
``lesion_class``          no        ``negative``, ``macro``, ``micro`` or ``itc`` (Camelyon17 size classes,
                                    docs/method.md §5); empty when unknown (e.g. Camelyon16 training tumours)
``split``                 no        ``train``, ``validation`` or ``test``; empty when the slide is in none
``patient``               no        patient id, so that splits can keep a patient's nodes together
``centre``                no        the centre (stain and scanner) a slide comes from, for per-centre
                                    metrics; kept in ``extra``, read by ``ManifestRow.centre`` (which also
                                    reads a ``center`` column, the spelling of older manifests)
anything else             no        kept, in ``ManifestRow.extra``, and written back by ``write_manifest``
========================  ========  =========================================================================

A slide may appear once: rows are compared by ``slide_identity`` (a file's real path, symlinks followed; a
URI's canonical spelling), so one slide under two spellings is refused too, naming both rows.

Validation happens before any work: every problem of every row is collected and reported at once, as one
``MagnetError`` line ``manifest.csv: 3 bad rows: row 4: ...; row 9: ...``. Row numbers are the file's line
numbers (the header is row 1), as a spreadsheet shows them. With ``skip_bad=True`` the bad rows are dropped
instead and listed in ``Manifest.skipped``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from magnet.atomic import atomic_write_text
from magnet.data.lesions import LESION_CLASSES
from magnet.errors import MagnetError
from magnet.slides.registry import open_slide, slide_identity, uri_scheme

Split = Literal["train", "validation", "test"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("slide", "label")
KNOWN_COLUMNS: tuple[str, ...] = ("slide", "label", "lesion_class", "split", "patient")

# A long error line is still read; a thousand "no such file" items (a wrong root folder) are not.
MAX_LISTED_PROBLEMS = 50



@dataclass(frozen=True)
class ManifestRow:
    """One slide of a manifest. ``slide`` is an absolute path or a URI.

    ``extra`` (the manifest's other columns) takes no part in equality or hashing, so rows can be set
    members and dict keys.
    """

    slide: str
    label: int
    lesion_class: str | None = None
    split: str | None = None
    patient: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def centre(self) -> str | None:
        """The slide's centre (``centre`` or ``center`` column); None when the manifest does not say."""
        return self.extra.get("centre") or self.extra.get("center") or None


@dataclass
class Manifest:
    """The validated rows of a manifest file, and the rows skipped with ``skip_bad`` (row, reason)."""

    rows: list[ManifestRow]
    path: Path | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def split(self, name: str) -> list[ManifestRow]:
        """The rows of split ``name`` (``train``, ``validation`` or ``test``), in file order."""
        if name not in SPLITS:
            raise MagnetError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")
        return [row for row in self.rows if row.split == name]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)


# --- reading ------------------------------------------------------------------------------------------


def read_manifest(
    path: str | os.PathLike[str], *, check_slides: bool = True, skip_bad: bool = False
) -> Manifest:
    """Read and validate a manifest CSV.

    ``check_slides`` opens every slide with ``open_slide`` (cheap: headers only, no pixels) so that an
    unreadable file is reported now rather than hours into training. ``skip_bad`` drops bad rows (listed in
    ``Manifest.skipped``) instead of failing. Problems with the file as a whole (missing, no header, a
    required column missing, no usable row) always raise.
    """
    manifest_path = Path(path)
    text = _read_text(manifest_path)
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise MagnetError(f"{manifest_path}: empty manifest (expected a header with columns slide,label,...)")
    columns = _normalise_header(manifest_path, header)

    base = manifest_path.parent
    rows: list[tuple[int, ManifestRow]] = []
    problems: list[tuple[int, str]] = []
    first_row_of: dict[str, tuple[int, ManifestRow]] = {}  # by slide identity
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        reasons: list[str] = []
        row = _parse_row(cells, columns, base, reasons)
        if row is not None:
            identity = slide_identity(row.slide)
            earlier = first_row_of.get(identity)
            if earlier is not None:
                reasons.append(_duplicate(row, *earlier))
            else:
                first_row_of[identity] = (line, row)
            if check_slides and not reasons:
                problem = _slide_problem(row.slide)
                if problem is not None:
                    reasons.append(problem)
        if reasons:
            problems.append((line, ", ".join(reasons)))
        elif row is not None:
            rows.append((line, row))

    if problems and not skip_bad:
        raise MagnetError(f"{manifest_path}: {_describe_problems(problems)}")
    if not rows:
        why = f" ({_describe_problems(problems)})" if problems else ""
        raise MagnetError(f"{manifest_path}: no usable rows{why}")
    return Manifest(rows=[row for _, row in rows], path=manifest_path, skipped=problems)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise MagnetError(f"{path}: no such manifest file")
    if path.is_dir():
        raise MagnetError(f"{path}: is a directory, not a manifest CSV")
    try:
        # utf-8-sig: spreadsheets often save CSV with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MagnetError(f"{path}: cannot read manifest ({exc})") from None


def _normalise_header(path: Path, header: list[str]) -> list[str]:
    columns = []
    for cell in header:
        name = cell.strip()
        columns.append(name.lower() if name.lower() in KNOWN_COLUMNS else name)
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise MagnetError(f"{path}: the header has an empty column name")
        if name in seen:
            raise MagnetError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    missing = [name for name in REQUIRED_COLUMNS if name not in seen]
    if missing:
        raise MagnetError(
            f"{path}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(header: {', '.join(columns)})"
        )
    return columns


def _parse_row(cells: list[str], columns: list[str], base: Path, reasons: list[str]) -> ManifestRow | None:
    """One CSV row into a ``ManifestRow``; every problem goes to ``reasons``. None when unusable."""
    if len(cells) > len(columns):
        reasons.append(f"{len(cells)} cells but the header has {len(columns)} columns")
        return None
    values = {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(columns)}

    slide_text = values["slide"]
    if not slide_text:
        reasons.append("empty slide")
    label = _parse_label(values["label"], reasons)
    lesion_class = _parse_choice(values.get("lesion_class", ""), LESION_CLASSES, "lesion_class", reasons)
    split = _parse_choice(values.get("split", ""), SPLITS, "split", reasons)
    if label is not None and lesion_class is not None:
        if label == 1 and lesion_class == "negative":
            reasons.append("label 1 but lesion_class 'negative'")
        elif label == 0 and lesion_class != "negative":
            reasons.append(f"label 0 but lesion_class {lesion_class!r}")
    if not slide_text or label is None:
        return None
    extra = {name: value for name, value in values.items() if name not in KNOWN_COLUMNS}
    return ManifestRow(
        slide=resolve_slide(slide_text, base),
        label=label,
        lesion_class=lesion_class,
        split=split,
        patient=values.get("patient") or None,
        extra=extra,
    )


def _parse_label(text: str, reasons: list[str]) -> int | None:
    if not text:
        reasons.append("missing label")
        return None
    # "1.0" too: tables written by pandas from a float column are common.
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    reasons.append(f"label must be 0 or 1 (got {text!r})")
    return None


def _parse_choice(text: str, choices: tuple[str, ...], column: str, reasons: list[str]) -> str | None:
    if not text:
        return None
    if text.lower() in choices:
        return text.lower()
    reasons.append(f"unknown {column} {text!r} (expected {', '.join(choices)})")
    return None


def resolve_slide(text: str, base: str | os.PathLike[str]) -> str:
    """A manifest's slide cell as ``open_slide`` takes it: a URI unchanged, a path made absolute.

    Text like ``synth:seed=1`` is a URI unless a file of that name exists in ``base`` (a path relative to
    the manifest wins over a scheme, because the file is certainly what was meant).
    """
    base_path = Path(base)
    if uri_scheme(text) and not (base_path / text).exists():
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base_path / path
    # abspath, not resolve(): normalise "..", keep symlinks as the user wrote them.
    return os.path.abspath(path)


def _duplicate(row: ManifestRow, earlier_line: int, earlier: ManifestRow) -> str:
    """Why a row repeats row ``earlier_line``: both spellings when they differ, and a label conflict."""
    if row.slide == earlier.slide:
        text = f"duplicate of row {earlier_line} ({row.slide})"
    else:
        text = f"duplicate of row {earlier_line}: {row.slide} is the same slide as {earlier.slide}"
    if row.label != earlier.label:
        text += f" (label {row.label} here, {earlier.label} there)"
    return text


def _slide_problem(slide: str) -> str | None:

    try:
        opened = open_slide(slide)
    except MagnetError as exc:  # SlideError, or a MagnetError from a URI opener (bad parameters)
        return str(exc)
    opened.close()
    return None


def _describe_problems(problems: Sequence[tuple[int, str]]) -> str:
    listed = "; ".join(f"row {line}: {reason}" for line, reason in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    tail = f"; ... and {more} more bad rows" if more > 0 else ""
    noun = "bad row" if len(problems) == 1 else "bad rows"
    return f"{len(problems)} {noun}: {listed}{tail}"


# --- writing ------------------------------------------------------------------------------------------


def write_manifest(
    rows: Iterable[ManifestRow], path: str | os.PathLike[str], *, relative: bool = False
) -> None:
    """Write ``rows`` as a manifest CSV (atomically). Extra columns are the union of the rows' extras.

    ``relative=True`` writes paths under the manifest's folder relative to it, so the folder can move.
    """
    target = Path(path)
    rows = list(rows)
    extra_columns: list[str] = []
    for row in rows:
        for name in row.extra:
            if name not in extra_columns and name not in KNOWN_COLUMNS:
                extra_columns.append(name)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*KNOWN_COLUMNS, *extra_columns])
    base = os.path.abspath(target.parent)
    for row in rows:
        slide = row.slide
        if relative and uri_scheme(slide) is None and os.path.isabs(slide):
            inside = os.path.commonpath([base, os.path.abspath(slide)]) == base
            slide = os.path.relpath(slide, base) if inside else slide
        writer.writerow(
            [
                slide,
                row.label,
                row.lesion_class or "",
                row.split or "",
                row.patient or "",
                *(row.extra.get(name, "") for name in extra_columns),
            ]
        )
    atomic_write_text(target, buffer.getvalue(), newline="")
