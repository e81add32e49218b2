"""Tests for magnet.data.manifest: parsing, validation listed at once, skip_bad, round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from magnet.data.manifest import (
    MAX_LISTED_PROBLEMS,
    Manifest,
    ManifestRow,
    read_manifest,
    resolve_slide,
    write_manifest,
)
from magnet.errors import MagnetError


def write_csv(tmp_path: Path, text: str, name: str = "manifest.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def write_png(path: Path, colour: tuple[int, int, int] = (200, 80, 120)) -> Path:
    Image.fromarray(np.full((16, 24, 3), colour, dtype=np.uint8)).save(path)
    return path


def test_reads_rows_resolves_paths_and_keeps_extras(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "Slide, Label ,lesion_class,split,patient,center\n"
        "a.tif,0,negative,train,p1,0\n"
        "sub/b.tif,1,MACRO,validation,p1,0\n"
        "/abs/c.tif,1,,test,,2\n"
        "\n"
        "synth:seed=3,1.0,itc,test,p9,\n",
    )
    manifest = read_manifest(path, check_slides=False)
    assert len(manifest) == 4 and manifest.skipped == []
    a, b, c, d = manifest.rows
    assert a == ManifestRow(str(tmp_path / "a.tif"), 0, "negative", "train", "p1")
    assert b.slide == str(tmp_path / "sub" / "b.tif") and b.lesion_class == "macro"
    assert c.slide == "/abs/c.tif" and c.lesion_class is None and c.patient is None
    assert d.slide == "synth:seed=3" and d.label == 1 and d.lesion_class == "itc"
    assert a.extra == {"center": "0"} and d.extra == {"center": ""}
    assert a.centre == "0" and d.centre is None  # the older spelling of the column is read too
    assert [r.slide for r in manifest.split("test")] == ["/abs/c.tif", "synth:seed=3"]
    assert manifest.split("train") == [a]
    with pytest.raises(MagnetError, match="unknown split 'val'"):
        manifest.split("val")


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "slide,label,lesion_class,split\n"
        "ok.tif,0,negative,train\n"  # row 2
        "x.tif,2,,train\n"  # row 3: bad label
        "y.tif,1,negative,train\n"  # row 4: mismatch
        "z.tif,0,micro,train\n"  # row 5: mismatch
        "ok.tif,0,,test\n"  # row 6: duplicate of row 2
        "w.tif,1,macro,val\n"  # row 7: unknown split
        ",1,,\n"  # row 8: empty slide
        "v.tif,,huge,\n"  # row 9: missing label and unknown class
        "u.tif,1,,train,extra\n",  # row 10: too many cells
    )
    with pytest.raises(MagnetError) as info:
        read_manifest(path, check_slides=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: 8 bad rows: row 3: label must be 0 or 1 (got '2'); row 4: ")
    for expected in [
        "row 4: label 1 but lesion_class 'negative'",
        "row 5: label 0 but lesion_class 'micro'",
        f"row 6: duplicate of row 2 ({tmp_path / 'ok.tif'})",
        "row 7: unknown split 'val' (expected train, validation, test)",
        "row 8: empty slide",
        "row 9: missing label, unknown lesion_class 'huge'",
        "row 10: 5 cells but the header has 4 columns",
    ]:
        assert expected in message


def test_skip_bad_drops_and_reports(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "slide,label\na.tif,0\nb.tif,x\nc.tif,1\na.tif,0\n")
    manifest = read_manifest(path, check_slides=False, skip_bad=True)
    assert [Path(r.slide).name for r in manifest.rows] == ["a.tif", "c.tif"]
    assert manifest.skipped == [
        (3, "label must be 0 or 1 (got 'x')"),
        (5, f"duplicate of row 2 ({tmp_path / 'a.tif'})"),
    ]


def test_check_slides_opens_files(tmp_path: Path) -> None:
    write_png(tmp_path / "good.png")
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"not a slide at all")
    rows = "good.png,1\nmissing.tif,0\nempty.tif,0\njunk.tif,0\nnosuchscheme:abc,0\n"
    path = write_csv(tmp_path, "slide,label\n" + rows)
    with pytest.raises(MagnetError) as info:
        read_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 4 bad rows: row 3: {tmp_path / 'missing.tif'}: no such file; ")
    assert f"row 4: {tmp_path / 'empty.tif'}: file is empty" in message
    assert f"row 5: {tmp_path / 'junk.tif'}: " in message  # the backends say why
    assert "row 6: nosuchscheme:abc" in message
    assert "row 2" not in message

    kept = read_manifest(path, skip_bad=True)
    assert [r.slide for r in kept.rows] == [str(tmp_path / "good.png")]
    assert [line for line, _ in kept.skipped] == [3, 4, 5, 6]


def test_check_slides_on_a_pyramidal_tiff(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "pyr.tif") as tif:
        tif.write(pixels, tile=(16, 16), subifds=1, photometric="rgb")
        tif.write(pixels[::2, ::2], tile=(16, 16), subfiletype=1, photometric="rgb")
    path = write_csv(tmp_path, "slide,label\npyr.tif,1\n")
    assert read_manifest(path).rows[0].slide == str(tmp_path / "pyr.tif")


def test_many_problems_are_capped(tmp_path: Path) -> None:
    body = "".join(f"s{i}.tif,9\n" for i in range(MAX_LISTED_PROBLEMS + 7))
    with pytest.raises(MagnetError, match=r"57 bad rows: .*; \.\.\. and 7 more bad rows$"):
        read_manifest(write_csv(tmp_path, "slide,label\n" + body), check_slides=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty manifest"),
        ("slide,split\na.tif,train\n", "missing required column label (header: slide, split)"),
        ("path,lbl\n", "missing required columns slide, label"),
        ("slide,label,slide\n", "column 'slide' appears twice"),
        ("slide,label\n", "no usable rows"),
        ("slide,label\na.tif,5\n", "1 bad row: row 2: label must be 0 or 1 (got '5')"),
    ],
)
def test_whole_file_problems(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(MagnetError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(write_csv(tmp_path, text), check_slides=False)


def test_skip_bad_with_nothing_left_fails(tmp_path: Path) -> None:
    with pytest.raises(MagnetError, match=r"no usable rows \(1 bad row: row 2: label"):
        read_manifest(write_csv(tmp_path, "slide,label\na.tif,7\n"), check_slides=False, skip_bad=True)


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(MagnetError, match="no such manifest file"):
        read_manifest(tmp_path / "none.csv")


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffslide,label\na.tif,1\n".encode())
    assert read_manifest(path, check_slides=False).rows[0].label == 1


def test_resolve_slide_prefers_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "odd:name.tif").write_bytes(b"x")
    assert resolve_slide("odd:name.tif", tmp_path) == str(tmp_path / "odd:name.tif")
    assert resolve_slide("synth:seed=1", tmp_path) == "synth:seed=1"
    assert resolve_slide("../x.tif", tmp_path / "a") == str(tmp_path / "x.tif")


def test_write_read_round_trip(tmp_path: Path) -> None:
    rows = [
        ManifestRow(str(tmp_path / "data" / "a.tif"), 0, "negative", "train", "p1", {"center": "1"}),
        ManifestRow("synth:seed=2,lesion=micro", 1, "micro", "test", None, {"note": "has, comma"}),
        ManifestRow("/elsewhere/b.tif", 1, None, None, None),
    ]
    for relative in (False, True):
        path = tmp_path / "data" / f"m{int(relative)}.csv"
        write_manifest(rows, path, relative=relative)
        back = read_manifest(path, check_slides=False)
        assert back.rows == rows
        assert back.rows[0].extra == {"center": "1", "note": ""}
        assert back.rows[1].extra == {"center": "", "note": "has, comma"}
    assert (tmp_path / "data" / "m1.csv").read_text().splitlines()[1].startswith("a.tif,0,negative")


def test_manifest_is_iterable() -> None:
    rows = [ManifestRow("a", 0), ManifestRow("b", 1)]
    assert list(Manifest(rows)) == rows
