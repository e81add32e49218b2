"""HTML pages of an explanation: one report per slide and an index of the slides.

Each page is self-contained (inline CSS, no script, nothing fetched from the network); images and the
GeoJSON are referenced by paths relative to the page, so a folder of explanations can be copied, zipped or
served as it is (``html_parts``). Every piece of text that comes from the user (slide paths, URIs, errors) is
HTML-escaped. Every probability on a page is named (the model's tumour probability, or the running one after
a patch) and said to be uncalibrated and without a decision threshold, since a reader would otherwise take
0.43 for "43 % likely" or 0.5 for the cut-off.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence

from magnet.atomic import atomic_write_text
from magnet.explain.html_parts import (
    PROBABILITY_NAME,
    format_probability,
    legend_table,
    page,
    probability_notes,
    relative_url,
)
from magnet.explain.legend import format_length, layer_keys
from magnet.explain.palette import layer_hex
from magnet.explain.result import ExplainResult

__all__ = ["render_slide_report", "render_index", "write_slide_report", "write_index", "format_probability"]


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


def _slide_facts(result: ExplainResult) -> str:
    """The list under the probability: the slide's size and scale, the zoom, the model, the time taken."""
    w, h = result.slide_size
    if result.mpp:
        mm = f" ({format_length(w * result.mpp[0])} x {format_length(h * result.mpp[1])})"
        scale = f"{result.mpp[0]:.3f} x {result.mpp[1]:.3f} µm/px"
    else:
        mm, scale = "", "not stated in the file (sizes in pixels only)"
    keys = layer_keys(result.boxes, result.mpp, result.final_patch_pixels)
    final = f": {keys[-1].count}, {keys[-1].size_text()}" if keys else ""
    layers = " x ".join(str(p) for p in result.patches_per_layer)
    checkpoint = f"<li>Model: {html.escape(result.checkpoint)}</li>" if result.checkpoint else ""
    return f"""<ul>
<li>Slide: {w} x {h} pixels at level 0{html.escape(mm)}; resolution {html.escape(scale)}</li>
<li>Magnifying layers: {len(result.boxes)} (children per region: {layers});
final patches{html.escape(final)}</li>
{checkpoint}
<li>Explained in {result.seconds:.1f} s</li>
</ul>"""


def render_slide_report(result: ExplainResult) -> str:
    """The HTML report of one explained slide (see the module docstring)."""
    files = {role: relative_url(path.name) for role, path in result.files.items()}
    keys = layer_keys(result.boxes, result.mpp, result.final_patch_pixels)
    full = (f'<p class="path">{html.escape(result.slide)}</p>' if result.display_name != result.slide else "")
    body = f"""
<p class="note"><a href="{relative_url("..", "index.html")}">&larr; all slides</a></p>
<h1>{html.escape(result.display_name)}</h1>
{full}
<div class="verdict">
<p>The model's {PROBABILITY_NAME} for this slide:
<span class="prob">{format_probability(result.probability)}</span></p>
{probability_notes()}
</div>
{_slide_facts(result)}

<h2>Where the model looked</h2>
<p><img src="{files['rois_png']}" alt="slide thumbnail with the regions of every magnifying layer"></p>
<p>Legend: each magnifying layer chooses regions within (or around) the regions of the layer before it, one
colour per layer; the numbers are those of the final patches below.</p>
{legend_table(keys)}
<p class="note">The thin black dashed line is the slide's edge; where a box reaches beyond it (grey), the
model read black (the slide sits centred on a black square). The scale bar is under the picture, below the
slide's name.</p>

<h2>What it saw, and how each patch moved the probability</h2>
<p><img src="{files['patches_png']}" alt="final patches with the tumour probability after each"></p>
<p class="note">The final patches in the order the classifier reads them (depth-first: all patches of
the first region, then of the second...). Above each patch, <b>p</b>: the model's {PROBABILITY_NAME} for the
slide after reading that patch and the ones before it (the running probability; not calibrated); the last
one is the slide's probability. An arrow marks a change of more than 0.01. Black in a patch: outside the
slide, or background blanked by the reader's grey filter when the model was trained with it.</p>

<h2>The regions (level-0 pixels)</h2>
<p>In QuPath: open the slide, then drag
<a href="{files['geojson']}">{html.escape(result.files['geojson'].name)}</a> onto the viewer
(or File &gt; Import objects) to see every region as an annotation, classified by layer.
The boxes are the model's own, not clipped to the slide.</p>
<table class="regions">
<tr><th class="left">layer</th><th>#</th><th>parent #</th><th>x0</th><th>y0</th><th>x1</th><th>y1</th>
<th>side px</th><th>side µm</th><th>p after this patch</th><th class="left">note</th></tr>
{chr(10).join(_roi_rows(result))}
</table>
"""
    return page(f"MagNet explanation: {result.display_name}", body)


def render_index(results: Sequence[ExplainResult]) -> str:
    """The HTML list of explained slides with their probabilities, links and errors."""
    any_error = any(not r.ok for r in results)
    rows = []
    for r in results:
        name = html.escape(r.display_name)
        full = f'<br><span class="path">{html.escape(r.slide)}</span>' if r.display_name != r.slide else ""
        error = f'<td class="left error">{html.escape(r.error)}</td>' if any_error else ""
        if r.ok:
            report = relative_url(r.name, r.files["report"].name)
            figure = relative_url(r.name, r.files["rois_png"].name)
            rows.append(
                f"<tr><td class=\"left\"><a href=\"{report}\">{name}</a>{full}</td>"
                f"<td>{format_probability(r.probability)}</td>"
                f"<td><a href=\"{report}\"><img src=\"{figure}\" alt=\"where the model looked\" "
                f"style=\"width:240px\"></a></td>{error}</tr>"
            )
        else:
            rows.append(f"<tr><td class=\"left\">{name}{full}</td><td>n/a</td><td></td>{error}</tr>")
    n_ok = sum(r.ok for r in results)
    models = sorted({r.checkpoint for r in results if r.checkpoint})
    model = f"<p>Model: {html.escape(', '.join(models))}</p>" if models else ""
    error_header = '<th class="left">error</th>' if any_error else ""
    body = f"""
<h1>MagNet explanations</h1>
<p>{n_ok} of {len(results)} slides explained. Open a slide for where the model looked and what it saw.</p>
{model}
<div class="verdict">
<p>The number beside each slide is the model's {PROBABILITY_NAME}:</p>
{probability_notes(curve_below=False)}
</div>
<table>
<tr><th class="left">slide</th><th>{PROBABILITY_NAME}<br>(0 to 1, not calibrated)</th>
<th>where it looked</th>{error_header}</tr>
{chr(10).join(rows)}
</table>
"""
    return page("MagNet explanations", body)


def write_slide_report(path: str | os.PathLike[str], result: ExplainResult) -> None:
    atomic_write_text(path, render_slide_report(result))


def write_index(path: str | os.PathLike[str], results: Sequence[ExplainResult]) -> None:
    atomic_write_text(path, render_index(results))
