"""Finding the slides of a folder: the extensions the file backends declare, at any depth, in a fixed order,
without hidden files or the data folders of MIRAX slides."""

from __future__ import annotations

from pathlib import Path

import pytest

from magnet.errors import MagnetError
from magnet.slides import registry
from magnet.slides.discovery import find_slides, is_slide_file
from magnet.slides.names import safe_slide_name, stable_slide_name
from magnet.slides.registry import register_file_backend, slide_extensions


def test_the_extensions_are_those_of_the_registered_backends() -> None:
    known = slide_extensions()
    for ext in (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".dcm", ".bif", ".png", ".jpg"):
        assert ext in known
    assert list(known) == sorted(set(known)) and all(e.startswith(".") and e == e.lower() for e in known)


def test_a_plugin_backend_adds_its_extensions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FILE_BACKENDS", list(registry._FILE_BACKENDS))
    monkeypatch.setattr(registry, "_EXTENSIONS", dict(registry._EXTENSIONS))

    def opener(path: str):  # type: ignore[no-untyped-def]
        raise registry.NotThisFormat(path, "test")

    assert ".xyz" not in slide_extensions()
    register_file_backend("xyz", opener, extensions=(".XYZ",))
    assert ".xyz" in slide_extensions() and is_slide_file(Path("a/b.Xyz"))


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_find_slides_searches_every_depth_in_a_fixed_order(tmp_path: Path) -> None:
    _touch(tmp_path, "b.svs", "A.NDPI", "day2/c.ome.tif", "day1/z.png", "day1/deep/er/d.tiff",
           "day1/notes.txt", "day1/slide.svs.md5", ".cache/e.svs", "day1/.f.svs",
           "mirax/s.mrxs", "mirax/s/Data0001.dat", "mirax/s/Slidedat.ini", "mirax/s/stray.tif")
    found = [p.relative_to(tmp_path).as_posix() for p in find_slides(tmp_path)]
    assert found == ["A.NDPI", "b.svs", "day1/deep/er/d.tiff", "day1/z.png", "day2/c.ome.tif", "mirax/s.mrxs"]
    assert find_slides(tmp_path / "day2") == [tmp_path / "day2" / "c.ome.tif"]


def test_find_slides_in_a_folder_that_cannot_be_listed_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MagnetError, match=r"missing: cannot list the folder \(No such file"):
        find_slides(tmp_path / "missing")


def test_slide_names_are_safe_and_stable(tmp_path: Path) -> None:
    _touch(tmp_path, "x/CMU 1.svs", "y/CMU 1.svs")
    a, b = str(tmp_path / "x" / "CMU 1.svs"), str(tmp_path / "y" / "CMU 1.svs")
    assert safe_slide_name(a) == safe_slide_name(b) == "CMU_1"
    assert stable_slide_name(a, a) != stable_slide_name(b, b)
    assert stable_slide_name(a, a) == stable_slide_name(a, a) and stable_slide_name(a, a).startswith("CMU_1-")
    assert safe_slide_name("synth:seed=1,size=8192x8192") == "synth_seed_1_size_8192x8192"


SHARED_SLIDES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "slides").resolve()


@pytest.mark.skipif(not SHARED_SLIDES.exists(),
                    reason=f"real slides {SHARED_SLIDES} are absent (beside the repo)")
def test_the_files_of_one_dicom_series_are_one_slide(tmp_path: Path) -> None:
    import shutil

    series = SHARED_SLIDES / "camelyon16_lowres_multiframe.dcm"
    for name in ("level0.dcm", "level1.DCM"):  # two files of one series, as a scanner writes its levels
        shutil.copy(series, tmp_path / name)
    shutil.copy(SHARED_SLIDES / "TCGA-XK-AAJU-01A-01-TS1_small_nonstandard.dcm", tmp_path / "odd.dcm")
    (tmp_path / "other").mkdir()
    shutil.copy(series, tmp_path / "other" / "copy.dcm")  # another folder: another slide
    found = [p.relative_to(tmp_path).as_posix() for p in find_slides(tmp_path)]
    assert found == ["level0.dcm", "odd.dcm", "other/copy.dcm"]  # odd.dcm: no series known, kept alone
