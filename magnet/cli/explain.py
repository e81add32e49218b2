"""``magnet explain CHECKPOINT SLIDE... --out DIR``: figures, GeoJSON and HTML reports of decisions.

Writes ``DIR/<slide>/{rois.png, patches.png, rois.geojson, report.html}`` per slide and ``DIR/index.html``
(``magnet.explain``). Prints one line per slide and where the index is. A slide that cannot be read is
reported (standard error, and in the index) and the others are still explained (exit status 1); when no
slide could be explained it is a one-line error (exit status 2), as is a missing or bad checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magnet.domains import AtLeast, arg_type


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("explain", help="ROI figures, patch strips, GeoJSON (QuPath) and HTML reports")
    p.add_argument("checkpoint")
    p.add_argument("slides", nargs="+", help="slide files or URIs (synth:...)")
    p.add_argument("--out", required=True, help="output folder (one subfolder per slide, index.html)")
    p.add_argument("--thumbnail-size", type=arg_type(int, AtLeast(16)), default=1024,
                   help="longer side of the slide thumbnail in rois.png, pixels (default 1024)")
    p.add_argument("--device", default="cpu",
                   help="torch device: cpu, cuda, cuda:N, mps (default cpu; refused when absent)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.errors import MagnetError
    from magnet.explain import ExplainResult, explain_slides
    from magnet.explain.report import format_probability
    from magnet.inference.device import resolve_device
    from magnet.inference.fast_model import inference_copy
    from magnet.slides.colour import normaliser
    from magnet.slides.pool import SlidePool
    from magnet.training.checkpoints import load_model

    device = resolve_device(args.device)
    model, config = load_model(args.checkpoint)
    model = inference_copy(model).to(device)  # same predictions, faster
    out = Path(args.out)

    def show(result: ExplainResult) -> None:
        if result.ok:
            print(f"{result.slide}: p={format_probability(result.probability)} -> {result.files['report']}")
        elif len(args.slides) > 1:  # a single slide's error is the command's one-line error
            print(f"{result.slide}: error: {result.error}", file=sys.stderr)

    pool = SlidePool(grey_filter=config.data.grey_filter, threads=config.data.reader_threads,
                     wrap=normaliser(config.data.stain_norm))
    try:
        results = explain_slides(model, args.slides, pool, out, thumbnail_size=args.thumbnail_size,
                                 checkpoint=str(args.checkpoint), progress=show, seed=config.seed)
    finally:
        pool.close()
    failed = [r for r in results if not r.ok]
    if len(failed) == len(results):
        if len(results) == 1:
            raise MagnetError(failed[0].error)
        raise MagnetError(f"none of the {len(results)} slides could be explained (first: {failed[0].error})")
    print(f"explanations: {out / 'index.html'}")
    return 1 if failed else 0
