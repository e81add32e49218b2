"""``magnet data camelyon``: a manifest from the official Camelyon16/17 layouts, with the split protocol.

    magnet data camelyon --c16 CAMELYON16 --c17 CAMELYON17 --protocol paper --out camelyon/manifest.csv

``paper``: 25 % of Camelyon17 (stratified by class, by patient) is the test set; the rest is pooled with
Camelyon16 and split 80/20 into train/validation; ITC slides are kept only in the test set
(docs/method.md §5). ``c16_official``: Camelyon16's own training/testing split. No pixels are read.
"""

from __future__ import annotations

import argparse
from collections import Counter

from magnet.domains import NON_NEGATIVE, arg_type


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="build manifests from public data set layouts")
    sub = p.add_subparsers(dest="data_command", metavar="SOURCE")
    sub.required = True
    cam = sub.add_parser("camelyon", help="Camelyon16/17 manifest with the paper's or the official split")
    cam.add_argument("--c16", default=None, help="Camelyon16 root (training/, testing/)")
    cam.add_argument("--c17", default=None, help="Camelyon17 root (patient_*_node_*.tif, stage_labels.csv)")
    cam.add_argument("--protocol", choices=("paper", "c16_official"), default="paper")
    cam.add_argument("--seed", type=arg_type(int, NON_NEGATIVE), default=0)
    cam.add_argument("--out", required=True, help="manifest CSV to write")
    cam.set_defaults(func=run_camelyon)


def run_camelyon(args: argparse.Namespace) -> int:
    from magnet.data.camelyon import build_camelyon_manifest
    from magnet.data.lesions import slide_class
    from magnet.data.manifest import write_manifest
    from magnet.outputs import output_file

    output_file(args.out)
    rows = build_camelyon_manifest(args.c16, args.c17, args.protocol, args.seed)
    write_manifest(rows, args.out)
    counts = Counter((r.split, slide_class(r.lesion_class, r.label)) for r in rows)
    print(f"wrote {len(rows)} rows to {args.out}")
    for (split, cls), n in sorted(counts.items()):
        print(f"  {split:<11} {cls:<9} {n}")
    return 0
