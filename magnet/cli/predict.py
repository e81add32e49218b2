"""``magnet predict CHECKPOINT SLIDE... [--out predictions.json]``: one JSON object per slide.

With ``--out`` the file is checked before any slide is read and rewritten (atomically) after every slide,
so it always holds a valid JSON list of the slides done so far: an interruption or a late failure keeps
them. Without it the list goes to standard output at the end. One status line per slide goes to standard
error as it finishes; the exit status is 1 when a slide failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from magnet import strict_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="probability and ROIs per slide (JSON)")
    p.add_argument("checkpoint")
    p.add_argument("slides", nargs="+", help="slide files or URIs (synth:...)")
    p.add_argument("--out", default="", help="write the JSON list here (after every slide) instead of "
                                             "standard output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.atomic import atomic_write_text
    from magnet.evaluation.predict import predict
    from magnet.outputs import output_file

    out = output_file(args.out) if args.out else None
    done: list[dict[str, Any]] = []

    def stream(batch: list[dict[str, Any]]) -> None:
        done.extend(batch)
        if out is not None:
            atomic_write_text(out, strict_json.dumps(done, indent=1) + "\n")
        for r in batch:
            status = f"error: {r['error']}" if r["error"] else f"p={r['probability']:.3f}"
            print(f"{r['slide']}: {status}  {r['seconds']:.2f} s", file=sys.stderr)

    try:
        results = predict(args.checkpoint, args.slides, on_batch=stream)
    except KeyboardInterrupt:
        if out is not None:
            print(f"magnet: {len(done)} of {len(args.slides)} slides done; their predictions are in {out}",
                  file=sys.stderr)
        raise
    if out is None:
        print(strict_json.dumps(results, indent=1))
    return 1 if any(r["error"] for r in results) else 0
