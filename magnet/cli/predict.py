"""``magnet predict CHECKPOINT SLIDE... [--out predictions.json]``: one JSON object per slide."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magnet import strict_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="probability and ROIs per slide (JSON)")
    p.add_argument("checkpoint")
    p.add_argument("slides", nargs="+", help="slide files or URIs (synth:...)")
    p.add_argument("--out", default="", help="write the JSON list here instead of standard output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.predict import predict

    results = predict(args.checkpoint, args.slides)
    text = strict_json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    for r in results:
        status = f"error: {r['error']}" if r["error"] else f"p={r['probability']:.3f}"
        print(f"{r['slide']}: {status}  {r['seconds']:.2f} s", file=sys.stderr)
    return 1 if any(r["error"] for r in results) else 0
