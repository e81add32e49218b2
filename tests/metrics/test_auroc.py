"""Tests for magnet.metrics.auroc: AUROC against sklearn and by hand, Table 1 columns, bootstrap, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from magnet.evaluation.reports import (
    read_metrics_json,
    save_roc_png,
    write_metrics_json,
    write_predictions_csv,
)
from magnet.metrics.auroc import auroc, format_table1, table1


def test_auroc_by_hand() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    # Positives 0.5, 0.2; negatives 0.1, 0.5: pairs (0.5>0.1)=1, (0.5=0.5)=0.5, (0.2>0.1)=1, (0.2<0.5)=0.
    assert auroc([1, 1, 0, 0], [0.5, 0.2, 0.1, 0.5]) == pytest.approx(2.5 / 4)
    assert auroc([True, False], [3, 3]) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="needs positives and negatives"):
        auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.1, float("nan")])


def make_cohort(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    rng = np.random.default_rng(seed)
    classes: list[str | None] = ["negative"] * 40 + ["macro"] * 12 + ["micro"] * 10 + [None] * 3
    labels = np.array([0 if c == "negative" else 1 for c in classes])
    shift = {"negative": 0.0, "macro": 2.0, "micro": 0.5, None: 1.0}
    scores = np.array([rng.normal(shift[c], 1.0) for c in classes])
    return labels, scores, classes


def test_table1_columns_are_each_class_against_all_negatives() -> None:
    labels, scores, classes = make_cohort()
    result = table1(labels, scores, classes, n_bootstrap=200, seed=0)
    assert set(result) == {"macro", "micro", "itc", "macro_micro", "all", "n_slides"}
    assert result["n_slides"] == 65
    neg = labels == 0
    cls = np.array([c or "" for c in classes])
    for key, members in [("macro", ["macro"]), ("micro", ["micro"]), ("macro_micro", ["macro", "micro"])]:
        keep = neg | np.isin(cls, members)
        expected = roc_auc_score(labels[keep], scores[keep])
        assert result[key]["auroc"] == pytest.approx(expected)
        assert result[key]["n_neg"] == 40
    assert result["all"]["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["all"]["n_pos"] == 25  # unknown-class positives count in "All" only
    spelled = ["positive" if c is None else c for c in classes]
    assert table1(labels, scores, spelled, n_bootstrap=200, seed=0) == result
    assert result["macro_micro"]["n_pos"] == 22
    # ITC absent: no AUROC, no interval, zero positives.
    assert result["itc"] == {"auroc": None, "ci95": None, "n_pos": 0, "n_neg": 40}
    for key in ("macro", "micro", "macro_micro", "all"):
        lo, hi = result[key]["ci95"]
        assert 0.0 <= lo <= result[key]["auroc"] <= hi <= 1.0


def test_table1_bootstrap_is_deterministic_and_seeded() -> None:
    labels, scores, classes = make_cohort(1)
    a = table1(labels, scores, classes, n_bootstrap=100, seed=5)
    assert a == table1(labels, scores, classes, n_bootstrap=100, seed=5)
    assert a["macro"]["ci95"] != table1(labels, scores, classes, n_bootstrap=100, seed=6)["macro"]["ci95"]
    # A column's interval does not depend on whether other columns exist.
    only_macro = [c if c in ("negative", "macro") else None for c in classes]
    b = table1(labels, scores, only_macro, n_bootstrap=100, seed=5)
    assert b["macro"]["ci95"] == a["macro"]["ci95"]


def test_table1_bootstrap_interval_covers_a_known_spread() -> None:
    # Perfect separation: every stratified replicate is also perfect, so the interval is [1, 1].
    result = table1(
        [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9], ["negative"] * 3 + ["macro"] * 2, n_bootstrap=50
    )
    assert result["macro"]["ci95"] == [1.0, 1.0]


def test_table1_without_classes_or_negatives() -> None:
    result = table1([0, 1, 1], [0.1, 0.5, 0.7], n_bootstrap=0)
    assert result["all"]["auroc"] == 1.0 and result["all"]["ci95"] is None
    assert result["macro"]["auroc"] is None
    no_neg = table1([1, 1], [0.2, 0.3], ["macro", "micro"], n_bootstrap=10)
    assert all(no_neg[k]["auroc"] is None for k in ("macro", "micro", "all"))


def test_table1_rejects_contradictions() -> None:
    with pytest.raises(ValueError, match="slide 1: label 1 contradicts lesion class 'negative'"):
        table1([0, 1], [0.1, 0.2], ["negative", "negative"])
    with pytest.raises(ValueError, match="unknown lesion class 'big'"):
        table1([0, 1], [0.1, 0.2], ["negative", "big"])


def test_format_table1() -> None:
    labels, scores, classes = make_cohort()
    result = table1(labels, scores, classes, n_bootstrap=50)
    text = format_table1(result, name="3-layer MagNet")
    lines = text.splitlines()
    assert lines[0].split() == ["Macro", "Micro", "ITC", "Macro", "&", "Micro", "All"]
    assert lines[1].startswith("3-layer MagNet")
    assert f"{round(100 * result['macro']['auroc'])} %" in lines[1]
    assert "–" in lines[1]  # ITC is absent
    assert lines[3].split()[1:] == ["12", "10", "0", "22", "25"]
    assert "40 negative slides" in lines[-1] and "65 slides" in lines[-1]


def test_save_roc_png(tmp_path: Path) -> None:
    labels, scores, classes = make_cohort()
    path = tmp_path / "out" / "roc.png"
    save_roc_png(labels, scores, path, lesion_classes=classes)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (450, 450)
    save_roc_png(labels, scores, tmp_path / "roc_all.png")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "roc.png", "roc_all.png"]


def test_predictions_csv_and_metrics_json(tmp_path: Path) -> None:
    rows = [
        {"slide": "a.tif", "probability": 0.1 + 0.2, "label": 0, "lesion_class": "negative"},
        {
            "slide": "synth:seed=1,x=2",
            "probability": np.float32(0.75),
            "label": np.int64(1),
            "lesion_class": None,
        },
    ]
    write_predictions_csv(rows, tmp_path / "predictions.csv")
    with open(tmp_path / "predictions.csv", newline="") as handle:
        back = list(csv.DictReader(handle))
    assert back[0] == {
        "slide": "a.tif",
        "probability": repr(0.1 + 0.2),
        "label": "0",
        "lesion_class": "negative",
    }
    assert back[1]["slide"] == "synth:seed=1,x=2" and float(back[1]["probability"]) == 0.75
    assert back[1]["lesion_class"] == ""

    labels, scores, classes = make_cohort()
    result = table1(labels, scores, classes, n_bootstrap=20)
    write_metrics_json(result, tmp_path / "metrics.json")
    assert read_metrics_json(tmp_path / "metrics.json") == json.loads(json.dumps(result))
    assert json.loads((tmp_path / "metrics.json").read_text())["itc"]["auroc"] is None
    write_metrics_json({"x": float("nan")}, tmp_path / "nan.json")  # strict JSON: "no number" is null
    assert (tmp_path / "nan.json").read_text() == '{\n  "x": null\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "nan.json", "predictions.csv"]


def test_table1_by_group_scores_each_group_alone() -> None:
    from magnet.metrics.auroc import format_by_group, table1_by_group

    groups = ["a", "a", "a", "b", "b", "b", None]
    labels = [0, 1, 1, 0, 0, 1, 1]
    scores = [0.2, 0.9, 0.1, 0.5, 0.7, 0.6, 0.0]
    classes = ["negative", "macro", "micro", "negative", "negative", "macro", "macro"]
    by = table1_by_group(groups, labels, scores, classes, n_bootstrap=0)
    assert set(by) == {"a", "b"}  # the slide of no group is left out
    a = by["a"]
    assert a["all"]["auroc"] == 0.5 and a["macro"]["auroc"] == 1.0 and a["micro"]["auroc"] == 0.0
    assert by["b"]["all"]["auroc"] == 0.5 and by["b"]["micro"]["auroc"] is None and by["b"]["n_slides"] == 3
    text = format_by_group(by)
    assert text.splitlines()[1].startswith("centre b (3 slides): Macro 0.500") and "Micro –" in text
