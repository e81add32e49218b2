"""Explanations of a MagNet's decisions for pathologists: ROI figures, patch strips, GeoJSON, HTML reports.

``explain_slide(model, reader, slide_spec, out_dir)`` explains one slide into its own folder;
``explain_slides(model, slides, pool, out_dir)`` explains many, one folder each, plus ``index.html``.
See ``magnet.explain.explainer`` for the files written.
"""

from magnet.explain.explainer import (
    OUTPUT_FILES,
    ExplainResult,
    explain_slide,
    explain_slides,
    safe_slide_name,
)

__all__ = ["OUTPUT_FILES", "ExplainResult", "explain_slide", "explain_slides", "safe_slide_name"]
