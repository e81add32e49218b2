"""``bench/screenshot_reports.py``: the pages it finds, the crop to the page's end, a one-line error without
Chromium; one real screenshot where Chromium is installed (skipped elsewhere, saying so)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "screenshot_reports.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_reports", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


shots = _script()


def _explain_folder(root: Path) -> Path:
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "index.html").write_text('<p><a href="a/report.html">a</a></p>')
    for name in ("b", "a"):
        (root / name / "report.html").write_text(f"<h1>slide {name}</h1><p>{'text ' * 50}</p>")
    return root


def test_pages_are_the_index_then_every_report_in_order(tmp_path: Path) -> None:
    root = _explain_folder(tmp_path / "explained")
    assert [(n, p.relative_to(root).as_posix()) for n, p in shots.report_pages(root)] == \
        [("index", "index.html"), ("a", "a/report.html"), ("b", "b/report.html")]
    with pytest.raises(shots.ScreenshotError, match="no index.html"):
        shots.report_pages(tmp_path)


def test_the_screenshot_is_cropped_below_the_page_end(tmp_path: Path) -> None:
    png = tmp_path / "shot.png"
    image = Image.new("RGB", (200, 1000), "white")
    image.paste((20, 20, 20), (10, 10, 190, 300))  # the page's content ends at row 300
    image.save(png)
    assert shots.crop_to_page(png)
    with Image.open(png) as cropped:
        assert cropped.size == (200, 300 + shots.BOTTOM_MARGIN)
    full = tmp_path / "full.png"
    Image.new("RGB", (50, 100), "black").save(full)
    image = Image.open(full)
    image.paste((255, 255, 255), (0, 99, 50, 100))
    image.save(full)
    assert not shots.crop_to_page(full)  # content down to the window's last rows: the page was cut


def test_no_chromium_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _explain_folder(tmp_path / "explained")
    code = shots.main([str(root), "--out", str(tmp_path / "shots"), "--chromium", "no-such-browser-xyz"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("screenshot_reports: error: no Chromium found") and "apt-get install" in err


@pytest.mark.skipif(not any(shutil.which(n) for n in shots.CHROMIUM_NAMES),
                    reason="Chromium is not installed (apt-get install -y chromium); the pages' HTML is "
                           "checked without it in tests/pipeline/test_explain_report.py")
def test_chromium_screenshots_every_page_whole(tmp_path: Path) -> None:
    root = _explain_folder(tmp_path / "explained")
    written = shots.screenshot_reports(root, tmp_path / "shots", width=400, max_height=3000)
    assert [p.name for p in written] == ["index.png", "a.png", "b.png"]
    for png in written:
        with Image.open(png) as image:
            assert image.size[0] == 400 and 24 < image.size[1] < 3000  # cropped to the page
