"""Data sets of virtual slides: class mix, splits, manifest columns, lesion outlines, determinism, CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from magnet.cli import main
from magnet.data.lesions import read_lesions
from magnet.data.manifest import read_manifest
from magnet.errors import ConfigError
from magnet.synth import VirtualSlide
from magnet.synth.dataset import make_dataset, write_dataset


def test_class_mix_and_stratified_splits() -> None:
    slides = make_dataset(100, seed=0)
    classes = Counter(s.lesion_class for s in slides)
    assert classes == {"negative": 64, "macro": 14, "micro": 13, "itc": 9}
    assert all(s.label == int(s.lesion_class != "negative") for s in slides)
    for name in classes:
        splits = Counter(s.split for s in slides if s.lesion_class == name)
        assert splits["train"] > splits["validation"] > 0 and splits["test"] > 0
    assert len({s.uri for s in slides}) == 100
    for s in slides:
        assert (len(s.lesions) > 0) == (s.label == 1)
        if s.lesions:
            assert s.lesions[0]["class"] == s.lesion_class


def test_dataset_files_are_deterministic_and_readable(tmp_path: Path) -> None:
    kwargs = {"size": (40000, 40000)}
    first = write_dataset(make_dataset(30, seed=4, **kwargs), tmp_path / "a")
    second = write_dataset(make_dataset(30, seed=4, **kwargs), tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a" / "lesions.json").read_bytes() == (tmp_path / "b" / "lesions.json").read_bytes()
    with first.open() as handle:
        header = next(csv.reader(handle))
    assert header[:4] == ["slide", "label", "lesion_class", "split"] and "lesions" in header
    manifest = read_manifest(first)
    assert len(manifest) == 30
    outlines = read_lesions(tmp_path / "a" / "lesions.json")
    row = next(r for r in manifest if r.label == 1)
    assert row.extra["lesions"] == "lesions.json"
    slide = VirtualSlide(row.slide)
    assert slide.lesion_class == row.lesion_class
    np.testing.assert_allclose(outlines[row.slide][0], slide.lesions[0], atol=0.01)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one slide"):
        make_dataset(0)
    with pytest.raises(ConfigError, match="texture"):
        make_dataset(3, texture="oil")
    with pytest.raises(ConfigError, match="too small for macro"):
        make_dataset(20, size=(4096, 4096))


def test_cli_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert (
        main(["synth", "dataset", "--n", "12", "--seed", "2", "--size", "41000x40000", "--out", str(out)])
        == 0
    )
    assert "12 slides" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 12 and all(
        r["slide"].startswith("synth:") and "size=41000x40000" in r["slide"] for r in rows
    )
    assert set(json.loads((out / "lesions.json").read_text())) == {r["slide"] for r in rows}
    # The look-alikes (hard negatives) are written beside the lesions, named by their own column.
    assert {r["lookalikes"] for r in rows} == {"lookalikes.json"}
    lookalikes = json.loads((out / "lookalikes.json").read_text())
    first = rows[0]["slide"]
    expected = VirtualSlide(first).lookalikes
    assert len(lookalikes[first]) == len(expected) > 0
    for written, item in zip(lookalikes[first], expected, strict=True):
        assert written["kind"] == item.kind and written["mimics"] == item.mimics
        assert np.allclose(written["polygon"], item.polygon, atol=0.01)
    assert main(["synth", "export", "synth:seed=1,foo=2", str(tmp_path / "x.tif")]) == 2
    assert "unknown key 'foo'" in capsys.readouterr().err


def test_manifest_records_the_generator_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # New data sets are version 3 unless told otherwise; versions 1 and 2 stay one flag away.
    rows = read_manifest(write_dataset(make_dataset(6, seed=3, size=(40000, 40000)), tmp_path / "v3"))
    assert {r.extra["generator_version"] for r in rows} == {"3"}
    assert all(r.slide.endswith(",version=3") for r in rows)
    assert VirtualSlide(next(iter(rows)).slide).version == 3
    out = tmp_path / "v1"
    args = ["synth", "dataset", "--n", "6", "--size", "40000x40000", "--version", "1", "--out", str(out)]
    assert main(args) == 0
    rows = read_manifest(out / "manifest.csv")
    assert {r.extra["generator_version"] for r in rows} == {"1"}
    assert all("version" not in r.slide for r in rows)  # as every URI written before versions existed
    assert VirtualSlide(next(iter(rows)).slide).version == 1
    with pytest.raises(ConfigError, match="version"):
        make_dataset(3, version=5)


@pytest.mark.parametrize("counts", [{"negative": 12, "macro": 6, "micro": 6, "itc": 6},
                                    {"negative": 1, "macro": 1, "micro": 1, "itc": 1}, {"itc": 7}])
def test_an_enriched_test_set_replaces_the_test_split_with_the_counts_asked_for(counts: dict) -> None:
    from magnet.synth.dataset import with_enriched_test

    size = (32768, 32768)
    slides = make_dataset(40, seed=3, size=size)
    combined = with_enriched_test(slides, counts, 4, size=size)
    kept = [s for s in slides if s.split != "test"]
    assert combined[: len(kept)] == kept  # train and validation untouched, in order
    test = combined[len(kept):]
    assert Counter(s.lesion_class for s in test) == Counter({c: k for c, k in counts.items() if k})
    assert {s.split for s in test} == {"test"}
    assert not {s.uri for s in test} & {s.uri for s in slides}  # another data-set seed: other slides
    assert all("size=32768x32768" in s.uri for s in test)  # made with the data set's own options
    assert combined == with_enriched_test(slides, counts, 4, size=size)  # a function of its arguments


def test_synth_dataset_test_counts_writes_an_enriched_test_split(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert main(["synth", "dataset", "--n", "30", "--seed", "2", "--size", "20000x20000", "--test-counts",
                 "5", "3", "2", "1", "--out", str(out)]) == 0
    rows = read_manifest(out / "manifest.csv")
    test = Counter(r.lesion_class for r in rows if r.split == "test")
    assert test == Counter({"negative": 5, "macro": 3, "micro": 2, "itc": 1})
    without = [s for s in make_dataset(30, 2, size=(20000, 20000)) if s.split != "test"]
    assert [r.slide for r in rows if r.split != "test"] == [s.uri for s in without]


def test_take_per_class_picks_the_first_of_each_class_in_order() -> None:
    from magnet.synth.dataset import take_per_class

    slides = make_dataset(60, seed=5, size=(40000, 40000))
    chosen = take_per_class(slides, {"negative": 3, "macro": 2})
    assert [s.lesion_class for s in chosen].count("negative") == 3 and len(chosen) == 5
    assert {s.split for s in chosen} == {"test"}
    expected = [s.uri for s in slides if s.lesion_class == "macro"][:2]
    assert [s.uri for s in chosen if s.lesion_class == "macro"] == expected
    with pytest.raises(ConfigError, match=r"not enough slides .*'itc'"):
        take_per_class(slides, {"itc": 500})
