"""Tests for magnet.data.camelyon on small fake layouts (empty files and label CSVs, no pixels)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from magnet.data.camelyon import (
    build_camelyon_manifest,
    camelyon16_rows,
    camelyon17_rows,
    stratified_group_holdout,
)
from magnet.data.manifest import read_manifest, write_manifest
from magnet.errors import MagnetError

C17_CLASSES = ("negative", "itc", "micro", "macro")


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def make_c16(root: Path, n_normal: int = 20, n_tumor: int = 12, n_test: int = 10) -> Path:
    for i in range(1, n_normal + 1):
        touch(root / "training" / "normal" / f"normal_{i:03d}.tif")
    for i in range(1, n_tumor + 1):
        touch(root / "training" / "tumor" / f"tumor_{i:03d}.tif")
    lines = []
    for i in range(1, n_test + 1):
        touch(root / "testing" / "images" / f"test_{i:03d}.tif")
        if i % 3 == 0:
            lines.append(f"Test_{i:03d},Tumor,{'Macro' if i % 2 else 'Micro'},Primary")
        else:
            lines.append(f"test_{i:03d},Normal,,")
    (root / "testing" / "reference.csv").write_text("\n".join(lines) + "\n")
    return root


def make_c17(root: Path, n_patients: int = 40, seed: int = 0) -> Path:
    """Patients with five nodes each, classes drawn at roughly Camelyon17's rates."""
    rng = np.random.default_rng(seed)
    lines = ["patient,stage"]
    for p in range(n_patients):
        lines.append(f"patient_{p:03d}.zip,pN1")
        for n in range(5):
            stage = C17_CLASSES[rng.choice(4, p=[0.64, 0.07, 0.12, 0.17])]
            touch(root / "training" / f"center_{p // 20}" / f"patient_{p:03d}_node_{n}.tif")
            lines.append(f"patient_{p:03d}_node_{n}.tif,{stage}")
    (root / "training" / "stage_labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_camelyon16_rows(tmp_path: Path) -> None:
    rows = camelyon16_rows(make_c16(tmp_path))
    assert len(rows) == 42
    by_name = {Path(r.slide).stem: r for r in rows}
    assert by_name["normal_001"].label == 0 and by_name["normal_001"].lesion_class == "negative"
    assert by_name["tumor_003"].label == 1 and by_name["tumor_003"].lesion_class is None
    assert by_name["test_003"].label == 1 and by_name["test_003"].lesion_class == "macro"
    assert by_name["test_006"].lesion_class == "micro"
    assert by_name["test_001"].label == 0
    assert by_name["test_001"].extra == {"dataset": "camelyon16", "official_split": "testing"}
    assert all(r.split is None and Path(r.slide).is_absolute() for r in rows)
    assert len({r.patient for r in rows}) == 42


def test_camelyon16_label_disagreements_are_listed(tmp_path: Path) -> None:
    root = make_c16(tmp_path, n_test=3)
    touch(root / "testing" / "images" / "test_004.tif")  # no label
    with open(root / "testing" / "reference.csv", "a") as handle:
        handle.write("test_009,Normal\n")  # no image
    with pytest.raises(MagnetError, match=r"test_004.tif has no label; test_009.tif is labelled but missing"):
        camelyon16_rows(root)


def test_camelyon16_errors(tmp_path: Path) -> None:
    with pytest.raises(MagnetError, match="no Camelyon16 slides found"):
        camelyon16_rows(tmp_path)
    touch(tmp_path / "testing" / "images" / "test_001.tif")
    with pytest.raises(MagnetError, match="label file not found"):
        camelyon16_rows(tmp_path)
    (tmp_path / "testing" / "reference.csv").write_text("test_001,Maybe\n")
    with pytest.raises(MagnetError, match=r"row 1: expected Tumor or Normal \(got 'maybe'\)"):
        camelyon16_rows(tmp_path)


def test_camelyon17_rows(tmp_path: Path) -> None:
    rows = camelyon17_rows(make_c17(tmp_path, n_patients=4))
    assert len(rows) == 20
    first = rows[0]
    assert Path(first.slide).name == "patient_000_node_0.tif"
    assert first.patient == "camelyon17_patient_000"
    assert first.extra == {"dataset": "camelyon17", "centre": "0"} and first.centre == "0"
    assert all((r.label == 0) == (r.lesion_class == "negative") for r in rows)


def test_camelyon17_problems(tmp_path: Path) -> None:
    root = make_c17(tmp_path, n_patients=1)
    with open(root / "training" / "stage_labels.csv", "a") as handle:
        handle.write("patient_007_node_2.tif,macro\npatient_000_node_1.tif,huge\n")
    (root / "training" / "stage_labels.csv").write_text(
        (root / "training" / "stage_labels.csv").read_text().replace("patient_000_node_1.tif,", "x,", 1)
    )
    with pytest.raises(MagnetError) as info:
        camelyon17_rows(root)
    assert "patient_007_node_2.tif is labelled but not found" in str(info.value)
    assert "unknown stage 'huge' for patient_000_node_1.tif" in str(info.value)


def test_paper_protocol(tmp_path: Path) -> None:
    c16 = make_c16(tmp_path / "c16")
    c17 = make_c17(tmp_path / "c17", n_patients=40)
    rows = build_camelyon_manifest(c16, c17, "paper", seed=3)
    c17_all = camelyon17_rows(c17)
    by_split = {s: [r for r in rows if r.split == s] for s in ("train", "validation", "test")}

    # The test set is Camelyon17 only, 25 % of it, stratified by class (each class within one slide here).
    test = by_split["test"]
    assert all(r.extra["dataset"] == "camelyon17" for r in test)
    all_counts, test_counts = Counter(r.lesion_class for r in c17_all), Counter(r.lesion_class for r in test)
    for cls in C17_CLASSES:
        assert abs(test_counts[cls] - 0.25 * all_counts[cls]) <= 1.0, (cls, test_counts, all_counts)
    assert test_counts["itc"] > 0  # ITC stays in the test set

    # Everything else: all of Camelyon16 plus the non-test, non-ITC Camelyon17 slides, split 80/20.
    train_val = by_split["train"] + by_split["validation"]
    assert not any(r.lesion_class == "itc" for r in train_val)
    assert sum(r.extra["dataset"] == "camelyon16" for r in train_val) == 42
    n_c17_rest = len(c17_all) - len(test) - (all_counts["itc"] - test_counts["itc"])
    assert len(train_val) == 42 + n_c17_rest
    assert abs(len(by_split["validation"]) - 0.2 * len(train_val)) <= 2
    assert len(rows) == len(train_val) + len(test)

    # A patient's nodes never straddle two splits.
    split_of_patient: dict[str, set[str]] = {}
    for r in rows:
        split_of_patient.setdefault(str(r.patient), set()).add(str(r.split))
    assert all(len(s) == 1 for s in split_of_patient.values())

    # Deterministic in the seed, different across seeds.
    assert build_camelyon_manifest(c16, c17, "paper", seed=3) == rows
    assert build_camelyon_manifest(c16, c17, "paper", seed=4) != rows


def test_paper_protocol_rows_make_a_valid_manifest(tmp_path: Path) -> None:
    rows = build_camelyon_manifest(make_c16(tmp_path / "c16"), make_c17(tmp_path / "c17", 8), "paper", seed=0)
    write_manifest(rows, tmp_path / "camelyon.csv")
    back = read_manifest(tmp_path / "camelyon.csv", check_slides=False)
    assert back.rows == rows
    assert back.rows[0].extra["dataset"] in ("camelyon16", "camelyon17")


def test_paper_protocol_by_slide(tmp_path: Path) -> None:
    c17 = make_c17(tmp_path / "c17", n_patients=12)
    rows = build_camelyon_manifest(None, c17, "paper", seed=0, group_by_patient=False)
    test = Counter(r.lesion_class for r in rows if r.split == "test")
    total = Counter(r.lesion_class for r in camelyon17_rows(c17))
    assert all(abs(test[c] - 0.25 * total[c]) <= 0.5 for c in C17_CLASSES)


def test_c16_official_protocol(tmp_path: Path) -> None:
    rows = build_camelyon_manifest(make_c16(tmp_path), None, "c16_official", seed=0)
    test = [r for r in rows if r.split == "test"]
    val = [r for r in rows if r.split == "validation"]
    train = [r for r in rows if r.split == "train"]
    assert {Path(r.slide).stem[:4] for r in test} == {"test"}
    assert len(test) == 10 and len(val) + len(train) == 32
    assert sum(r.label for r in val) == round(0.2 * 12) and len(val) - sum(r.label for r in val) == 4


def test_protocol_arguments(tmp_path: Path) -> None:
    with pytest.raises(MagnetError, match="needs the Camelyon17 folder"):
        build_camelyon_manifest(tmp_path, None, "paper", seed=0)
    with pytest.raises(MagnetError, match="needs the Camelyon16 folder"):
        build_camelyon_manifest(None, tmp_path, "c16_official", seed=0)
    with pytest.raises(MagnetError, match="unknown Camelyon protocol"):
        build_camelyon_manifest(tmp_path, tmp_path, "other", seed=0)  # type: ignore[arg-type]


def test_holdout_keeps_groups_and_strata() -> None:
    rng = np.random.default_rng(1)
    strata = list(rng.choice(["a", "b", "c"], size=300, p=[0.7, 0.2, 0.1]))
    groups = [i // 3 for i in range(300)]
    held = stratified_group_holdout(strata, groups, 0.25, seed=0)
    for g in range(100):
        assert len({i in held for i in range(3 * g, 3 * g + 3)}) == 1
    for s in "abc":
        n = strata.count(s)
        assert abs(sum(strata[i] == s for i in held) - 0.25 * n) <= 1.0
    assert stratified_group_holdout(strata, groups, 0.25, seed=0) == held
    assert stratified_group_holdout(strata, groups, 0.25, seed=1) != held
    with pytest.raises(ValueError):
        stratified_group_holdout(strata, groups, 1.0, seed=0)


def test_data_camelyon_command_writes_a_readable_manifest(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from magnet.cli import main
    from magnet.data.manifest import read_manifest

    out = tmp_path / "manifest.csv"
    code = main(["data", "camelyon", "--c16", str(make_c16(tmp_path / "c16")),
                 "--c17", str(make_c17(tmp_path / "c17")), "--out", str(out)])
    assert code == 0
    manifest = read_manifest(out, check_slides=False)
    assert {r.split for r in manifest.rows} == {"train", "validation", "test"}
    assert f"wrote {len(manifest.rows)} rows" in capsys.readouterr().out
    # Bad input: a missing Camelyon17 root is one line, exit 2.
    assert main(["data", "camelyon", "--c17", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("magnet: error:") and "nowhere" in err and "\n" not in err
