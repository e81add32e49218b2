"""The pages of ``magnet explain`` as a reader meets them: links that survive moving the folder, a legend for
every layer drawn, probabilities that say what they are, numbers that do not cover the boxes, and a scale.

Checked on the HTML's structure, not in a browser (``bench/screenshot_reports.py`` takes the screenshots
where Chromium is installed).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pipeline_fixtures import one_thread

from magnet.cli import main
from magnet.data.manifest import read_manifest
from magnet.explain.box_labels import label_text_colour, place_box_labels
from magnet.explain.html_parts import relative_url
from magnet.explain.legend import format_length, layer_keys
from magnet.explain.palette import layer_hex
from magnet.explain.report import render_index
from magnet.explain.result import ExplainResult, display_slide_name
from magnet.explain.scale_bar import round_length, scale_bar


class _Page(HTMLParser):
    """Every href and src of a page, its tags, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []
        self.legend_layers: list[tuple[int, str]] = []  # (layer, style attribute of its line key)
        self.text: list[str] = []
        self._row_layer: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.links += [v for k, v in attrs if k in ("href", "src") and v is not None]
        if tag == "tr" and values.get("class") == "layer-key":
            self._row_layer = int(values["data-layer"] or 0)
        elif tag == "span" and values.get("class") == "linekey" and self._row_layer is not None:
            self.legend_layers.append((self._row_layer, values.get("style") or ""))
            self._row_layer = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def plain(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text))


def _parse(page: Path) -> _Page:
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def explained(run, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """``magnet explain`` of a positive and a negative test slide, into a folder the tests may move."""
    cfg, result = run
    rows = [r for r in read_manifest(cfg.data.manifest, check_slides=False).rows if r.split == "test"]
    slides = [next(r.slide for r in rows if r.label == 1), next(r.slide for r in rows if r.label == 0)]
    out = tmp_path_factory.mktemp("explain-report") / "explained"
    with one_thread():
        assert main(["explain", str(result.run_dir / "best.ckpt"), *slides, "--out", str(out),
                     "--thumbnail-size", "256"]) == 0
    return out


def test_every_link_is_relative_and_resolves_after_the_folder_is_moved(explained: Path,
                                                                       tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "copy of explanations"  # a space: links must be encoded
    shutil.copytree(explained, moved)
    pages = [moved / "index.html", *sorted(moved.glob("*/report.html"))]
    assert len(pages) == 3
    for page in pages:
        parsed = _parse(page)
        assert parsed.links, page
        # Self-contained: no script, no stylesheet or other resource to fetch.
        assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags), page
        assert "url(" not in page.read_text() and "@import" not in page.read_text()
        for link in parsed.links:
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc and not link.startswith("/"), (page, link)
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_file(), (page, link)
            assert target.is_relative_to(moved.resolve()), (page, link)
    index = _parse(moved / "index.html")
    reports = {link for link in index.links if link.endswith("report.html")}
    assert len(reports) == 2  # both slides reachable from the index, and back
    for report in moved.glob("*/report.html"):
        assert "../index.html" in _parse(report).links


def test_the_legend_names_every_layer_drawn_with_its_size(explained: Path) -> None:
    for report in sorted(explained.glob("*/report.html")):
        features = json.loads((report.parent / "rois.geojson").read_text())["features"]
        drawn = sorted({f["properties"]["layer"] for f in features})
        parsed = _parse(report)
        assert [layer for layer, _ in parsed.legend_layers] == drawn
        for layer, style in parsed.legend_layers:
            assert layer_hex(layer) in style  # the colour the figure draws the layer in
        final = [f for f in features if f["properties"]["layer"] == drawn[-1]]
        rings = [f["geometry"]["coordinates"][0] for f in final]
        side = statistics.median(max(r[2][0] - r[0][0], r[2][1] - r[0][1]) for r in rings)
        assert f"{side:.0f}" in parsed.plain  # the final patches' side in level-0 pixels
        assert "final patches" in parsed.plain and "µm/px" in parsed.plain  # virtual slides state their mpp


def test_every_probability_says_what_it_is(explained: Path) -> None:
    index = _parse(explained / "index.html").plain
    assert "tumour probability" in index and "not calibrated" in index.lower()
    assert "No decision threshold" in index
    for report in sorted(explained.glob("*/report.html")):
        text = _parse(report).plain
        probability = json.loads((report.parent / "rois.geojson").read_text())["features"][-1][
            "properties"]["running_probability"]
        assert re.search(rf"tumour probability for this slide: {probability:.3f}", text), text[:400]
        assert "Not calibrated" in text and "No decision threshold" in text
        assert "p after this patch" in text and "running probability" in text
        assert text.count(f"{probability:.3f}") >= 2  # the verdict and the last row of the regions table


def test_final_box_numbers_cover_neither_the_boxes_nor_each_other() -> None:
    # Three tight triplets of small boxes, as the final patches of one parent lie in a 1024-px thumbnail.
    boxes = []
    for cx, cy in ((300, 300), (600, 350), (450, 700)):
        boxes += [[cx, cy, cx + 20, cy + 20], [cx + 18, cy + 4, cx + 38, cy + 24], [cx + 6, cy + 22, cx + 26,
                                                                                     cy + 42]]
    fig = Figure(figsize=(10.24, 10.24), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1024)
    ax.set_ylim(1024, 0)
    rects = place_box_labels(ax, canvas.get_renderer(), boxes, layer_hex(3))
    assert len(rects) == len(boxes) == len(ax.texts)
    assert [t.get_text() for t in ax.texts] == [str(k) for k in range(1, len(boxes) + 1)]

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        return max(w, 0.0) * max(h, 0.0)

    on_screen = [tuple(ax.transData.transform([(b[0], b[3]), (b[2], b[1])]).ravel()) for b in boxes]
    for i, rect in enumerate(rects):
        assert all(overlap(rect, other) == 0 for j, other in enumerate(rects) if j != i)
        assert all(overlap(rect, box) == 0 for box in on_screen)
        # ... and each number touches its own box, so that it reads as that box's.
        box = on_screen[i]
        assert rect[0] <= box[2] and rect[2] >= box[0] and rect[1] <= box[3] and rect[3] >= box[1]


def test_labels_are_black_on_light_colours_and_white_on_dark() -> None:
    assert label_text_colour("#ff7f0e") == "black"  # orange
    assert label_text_colour("#1f77b4") == "white"  # blue
    assert label_text_colour("#ffffff") == "black" and label_text_colour("#000000") == "white"


def test_scale_bar_is_a_round_length_in_um_or_says_it_is_pixels() -> None:
    assert [round_length(x) for x in (1.0, 1.9, 2.0, 4.99, 7.0, 1700.0, 0.03)] == \
        pytest.approx([1.0, 1.0, 2.0, 2.0, 5.0, 1000.0, 0.02])
    length, label = scale_bar(32768, (0.25, 0.25))  # an 8.2 mm slide: a 1 mm bar
    assert (length, label) == (4000.0, "1 mm")
    length, label = scale_bar(5000, None)
    assert length == 1000 and "px" in label and "µm" in label  # says why it is not in µm
    with pytest.raises(ValueError):
        round_length(0.0)


def test_lengths_and_layer_keys_read_like_a_pathologist_writes_them() -> None:
    assert [format_length(x) for x in (221.4, 1000.0, 2458.0, 12000.0, 5.0)] == \
        ["221 µm", "1 mm", "2.5 mm", "12 mm", "5 µm"]
    boxes = [[[0, 0, 9830, 9830]], [[0, 0, 2949, 2949], [10, 10, 2959, 2959], [0, 0, 3000, 3000]]]
    first, final = layer_keys(boxes, (0.25, 0.25), final_patch_pixels=112)
    assert not first.final and first.line_style == "solid" and first.read_um_per_px is None
    assert final.final and final.count == 3 and final.side_px == 2949
    assert final.read_um_per_px == pytest.approx(2949 * 0.25 / 112)
    assert "final patches" in final.describe() and "737 µm" in final.describe()
    no_mpp = layer_keys(boxes, None, final_patch_pixels=112)[-1]
    assert no_mpp.side_um is None and "µm" not in no_mpp.describe() and "2949 px" in no_mpp.describe()


def test_slide_names_and_links_with_odd_characters(tmp_path: Path) -> None:
    assert display_slide_name("/data/cohort A/CMU-1.svs") == "CMU-1.svs"
    assert display_slide_name("C:\\slides\\x.ndpi") == "x.ndpi"
    assert display_slide_name("synth:seed=3,lesion=macro") == "synth:seed=3,lesion=macro"
    assert relative_url("..", "index.html") == "../index.html"
    assert relative_url("a b#1", "report.html") == "a%20b%231/report.html"
    folder = tmp_path / "a b#1"
    folder.mkdir()
    (folder / "report.html").write_text("")
    (folder / "rois.png").write_bytes(b"")
    ok = ExplainResult(slide="/x/a b#1.svs", name="a b#1",
                       files={"report": folder / "report.html", "rois_png": folder / "rois.png"},
                       probability=0.25)
    failed = ExplainResult(slide="/x/broken.svs", name="broken", error="no such file: <broken>")
    page = tmp_path / "index.html"
    page.write_text(render_index([ok, failed]))
    parsed = _parse(page)
    for link in parsed.links:
        assert (tmp_path / unquote(link)).is_file(), link
    assert "no such file: <broken>" in parsed.plain  # escaped in the page, read back as text
