"""HTML pages of an explanation: one report per slide and an index of the slides.

Each page is self-contained (inline CSS, no script, nothing fetched from the network); images and the
GeoJSON are referenced by paths relative to the page, so a folder of explanations can be copied, zipped or
served as it is. Every piece of text that comes from the user (slide paths, URIs, errors) is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence

from magnet.atomic import atomic_write_text
from magnet.explain.palette import layer_hex
from magnet.explain.result import ExplainResult

__all__ = ["render_slide_report", "render_index", "write_slide_report", "write_index", "format_probability"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.3em; word-break: break-all; }
.prob { font-size: 1.6em; font-weight: bold; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; }
td.left, th.left { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin-right: 4px; }
.note { color: #555; font-size: 0.9em; }
.error { color: #b00; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def format_probability(p: float) -> str:
    """The probability as every page and the CLI print it (three decimals)."""
    return "n/a" if math.isnan(p) else f"{p:.3f}"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _outside(box: Sequence[float], size: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = box
    return x0 < 0 or y0 < 0 or x1 > size[0] or y1 > size[1]


def _roi_rows(result: ExplainResult) -> list[str]:
    rows = []
    mpp = result.mpp
    n_layers = len(result.boxes)
    previous = 1
    for layer, boxes in enumerate(result.boxes, start=1):
        children = max(1, len(boxes) // max(1, previous))
        swatch = f'<span class="swatch" style="background:{layer_hex(layer)}"></span>'
        for index, box in enumerate(boxes):
            x0, y0, x1, y1 = box
            side = max(x1 - x0, y1 - y0)
            side_um = f"{side * (mpp[0] + mpp[1]) / 2:.0f}" if mpp else ""
            last = layer == n_layers
            running = (
                format_probability(result.running_probabilities[index])
                if last and index < len(result.running_probabilities) else ""
            )
            parent = str(index // children + 1) if layer > 1 else ""
            note = "reaches beyond the slide" if _outside(box, result.slide_size) else ""
            rows.append(
                f"<tr><td class=\"left\">{swatch}{layer}</td><td>{index + 1}</td><td>{parent}</td>"
                f"<td>{x0:.0f}</td><td>{y0:.0f}</td><td>{x1:.0f}</td><td>{y1:.0f}</td>"
                f"<td>{side:.0f}</td><td>{side_um}</td><td>{running}</td><td class=\"left\">{note}</td></tr>"
            )
        previous = max(1, len(boxes))
    return rows


def render_slide_report(result: ExplainResult) -> str:
    """The HTML report of one explained slide (see the module docstring)."""
    w, h = result.slide_size
    mpp = (f"{result.mpp[0]:.3f} x {result.mpp[1]:.3f} µm/px" if result.mpp
           else "not stated in the file (sizes in pixels only)")
    layers = " x ".join(str(p) for p in result.patches_per_layer)
    n_final = len(result.running_probabilities)
    files = {role: html.escape(path.name) for role, path in result.files.items()}
    checkpoint = f"<li>Model: {html.escape(result.checkpoint)}</li>" if result.checkpoint else ""
    body = f"""
<p class="note"><a href="../index.html">&larr; all slides</a></p>
<h1>{html.escape(result.slide)}</h1>
<p>Probability that the slide is positive (contains a lesion):
<span class="prob">{format_probability(result.probability)}</span></p>
<p class="note">A research model's output, to be read with the slide: not a diagnosis.</p>
<ul>
<li>Slide: {w} x {h} pixels at level 0; resolution {html.escape(mpp)}</li>
<li>Magnifying layers: {len(result.boxes)} (children per ROI: {layers}); {n_final} final patches</li>
{checkpoint}
<li>Explained in {result.seconds:.1f} s</li>
</ul>

<h2>Where the model looked</h2>
<p><img src="{files['rois_png']}" alt="slide thumbnail with the ROIs of every layer"></p>
<p class="note">Each magnifying layer chooses regions within (or around) the regions of the layer before
it (one colour per layer). The numbers are those of the final patches below. The thin black dashed line is
the slide's edge; where a box reaches beyond it (grey), the model read black (the slide sits centred on a
black square).</p>

<h2>What it saw, and how each patch moved the probability</h2>
<p><img src="{files['patches_png']}" alt="final patches with the running probability"></p>
<p class="note">The final patches in the order the classifier reads them (depth-first: all patches of
the first region, then of the second...). Above each patch: the slide probability after reading it; the
last one is the slide's probability. An arrow marks a change of more than 0.01. Black in a patch: outside
the slide, or background blanked by the reader's grey filter when the model was trained with it.</p>

<h2>The regions (level-0 pixels)</h2>
<p>In QuPath: open the slide, then drag <a href="{files['geojson']}">{files['geojson']}</a> onto the viewer
(or File &gt; Import objects) to see every region as an annotation, classified by layer. The boxes are the
model's own, not clipped to the slide.</p>
<table>
<tr><th class="left">layer</th><th>#</th><th>parent #</th><th>x0</th><th>y0</th><th>x1</th><th>y1</th>
<th>side px</th><th>side µm</th><th>p after</th><th class="left">note</th></tr>
{chr(10).join(_roi_rows(result))}
</table>
"""
    return _page(f"MagNet explanation: {result.name or result.slide}", body)


def render_index(results: Sequence[ExplainResult]) -> str:
    """The HTML list of explained slides with their probabilities, links and errors."""
    rows = []
    for r in results:
        name = html.escape(r.slide)
        if r.ok:
            report = html.escape(f"{r.name}/{r.files['report'].name}")
            figure = html.escape(f"{r.name}/{r.files['rois_png'].name}")
            rows.append(
                f"<tr><td class=\"left\"><a href=\"{report}\">{name}</a></td>"
                f"<td>{format_probability(r.probability)}</td>"
                f"<td><a href=\"{report}\"><img src=\"{figure}\" alt=\"ROIs\" "
                f"style=\"width:160px\"></a></td><td class=\"left\"></td></tr>"
            )
        else:
            rows.append(f"<tr><td class=\"left\">{name}</td><td>n/a</td><td></td>"
                        f"<td class=\"left error\">{html.escape(r.error)}</td></tr>")
    n_ok = sum(r.ok for r in results)
    body = f"""
<h1>MagNet explanations</h1>
<p>{n_ok} of {len(results)} slides explained. Probability: that the slide is positive (contains a lesion).</p>
<table>
<tr><th class="left">slide</th><th>probability</th><th>regions</th><th class="left">error</th></tr>
{chr(10).join(rows)}
</table>
"""
    return _page("MagNet explanations", body)


def write_slide_report(path: str | os.PathLike[str], result: ExplainResult) -> None:
    atomic_write_text(path, render_slide_report(result))


def write_index(path: str | os.PathLike[str], results: Sequence[ExplainResult]) -> None:
    atomic_write_text(path, render_index(results))
