"""Pieces shared by the HTML pages of an explanation: the page shell, relative links, the words that say what
the probability is, and the legend of the ROI figure.

Self-contained on purpose: the pages are opened offline (hospital networks), copied and zipped, so the style
is inline, there is no script, nothing is fetched, and every link or image is a path relative to the page,
percent-encoded (``relative_url``), so the folder works wherever it is moved.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from urllib.parse import quote

from magnet.explain.legend import LayerKey, format_length, format_resolution

__all__ = ["PROBABILITY_NAME", "format_probability", "legend_table", "page", "probability_notes",
           "relative_url"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.3em; word-break: break-all; margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; }
.prob { font-size: 1.6em; font-weight: bold; }
.verdict { background: #f6f6f6; border-left: 4px solid #888; padding: 0.4em 1em; margin: 1em 0; }
.verdict ul { margin: 0.3em 0; padding-left: 1.2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: middle; }
th { background: #f2f2f2; }
td.left, th.left { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin-right: 4px; }
.linekey { display: inline-block; width: 2.2em; height: 0.9em; vertical-align: middle;
  box-sizing: border-box; }
.note { color: #555; font-size: 0.9em; }
.path { color: #555; font-size: 0.85em; word-break: break-all; margin-top: 0; }
.error { color: #b00; }
img { max-width: 100%; border: 1px solid #ddd; }
"""

#: What the number is, as every page names it.
PROBABILITY_NAME = "tumour probability"


def format_probability(p: float) -> str:
    """The probability as every page and the CLI print it (three decimals)."""
    return "n/a" if math.isnan(p) else f"{p:.3f}"


def page(title: str, body: str) -> str:
    """A whole HTML page around ``body`` (already HTML), titled ``title`` (plain text)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def relative_url(*parts: str) -> str:
    """A link to ``parts`` joined by ``/`` relative to the page, each part percent-encoded, HTML-escaped.

    ``..`` is kept as it is (a step up to the parent folder); nothing absolute is ever produced.
    """
    return html.escape("/".join(part if part == ".." else quote(part, safe="") for part in parts))


def probability_notes(*, curve_below: bool = True) -> str:
    """The list that says what the tumour probability is, and is not (HTML ``<ul>``); ``curve_below``: the
    page shows the running-probability curve further down (a slide's report, not the index)."""
    reference = " 0.5 is drawn on the curve below for reference only." if curve_below else ""
    return f"""<ul class="prob-notes">
<li><b>What it is:</b> the model's estimate, from 0 to 1, that the slide contains tumour (is positive, as the
slides it was trained on were labelled).</li>
<li><b>Not calibrated:</b> no calibration on held-out slides was made, so 0.4 does not mean that 4 in 10
such slides are positive. Read it as a score, to compare slides scored by the same model.</li>
<li><b>No decision threshold:</b> the model comes without one (it is evaluated by AUROC, which needs none).
Choose a threshold on validation slides of your own before calling a slide positive or
negative.{reference}</li>
<li>A research model's output, to be read with the slide: not a diagnosis.</li>
</ul>"""


def _line_key(key: LayerKey) -> str:
    width_px = max(2, round(key.line_width * 96 / 72))
    return (f'<span class="linekey" style="border: {width_px}px {key.line_style} {key.colour}" '
            f'title="{key.line_style} {key.colour}"></span>')


def legend_table(keys: Sequence[LayerKey]) -> str:
    """The legend of the ROI figure as an HTML table: one row per layer drawn (``legend.layer_keys``)."""
    rows = []
    for key in keys:
        side_um = format_length(key.side_um) if key.side_um else "n/a"
        read = format_resolution(key.read_um_per_px) if key.read_um_per_px else ""
        rows.append(
            f'<tr class="layer-key" data-layer="{key.layer}"><td class="left">{_line_key(key)}</td>'
            f"<td>{key.layer}</td><td class=\"left\">{html.escape(key.role)}</td><td>{key.count}</td>"
            f"<td>{side_um}</td><td>{key.side_px:.0f}</td><td>{read}</td></tr>"
        )
    return f"""<table class="legend">
<tr><th class="left">box</th><th>layer</th><th class="left">what the boxes are</th><th>regions</th>
<th>side</th><th>side, level-0 px</th><th>patches read at</th></tr>
{chr(10).join(rows)}
</table>"""
