"""``magnet synth``: virtual lymph-node slides (docs/virtual-slides.md).

- ``magnet synth dataset --n 400 --seed 0 --out DIR [--size WxH] [--texture procedural|camelyon16]
  [--version 1|2|3|4]``
  writes ``DIR/manifest.csv`` and ``DIR/lesions.json`` (no pixels);
- ``magnet synth export URI OUT.tif [--workers N]`` writes a virtual slide as a JPEG-tiled pyramidal TIFF
  (its tiles rendered in N processes).
"""

from __future__ import annotations

import argparse
from typing import Any

from magnet.domains import NON_NEGATIVE, POSITIVE, AtLeast, Interval, MultipleOf, arg_type
from magnet.errors import ConfigError
from magnet.synth.uri import DEFAULT_MPP, DEFAULT_SIZE, DEFAULT_VERSION, TEXTURES, VERSIONS, parse_size


def _size(text: str) -> tuple[int, int]:
    size = parse_size(text)
    if size is None or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, each >= 1, got {text!r}")
    return size


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="virtual gigapixel lymph-node slides: data sets and TIFF export",
        description="Virtual lymph-node slides with ground truth, rendered on demand from synth: URIs.",
    )
    actions = parser.add_subparsers(dest="synth_command", metavar="ACTION")
    actions.required = True

    dataset = actions.add_parser("dataset", help="write a manifest of virtual slides (no pixels)")
    dataset.add_argument(
        "--n", type=arg_type(int, AtLeast(1)), default=400, help="number of slides (default 400)"
    )
    dataset.add_argument(
        "--seed", type=arg_type(int, NON_NEGATIVE), default=0, help="data set seed (default 0)"
    )
    dataset.add_argument(
        "--out", required=True, metavar="DIR", help="folder for manifest.csv and lesions.json"
    )
    default_size = f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}"
    dataset.add_argument(
        "--size",
        type=_size,
        default=DEFAULT_SIZE,
        metavar="WxH",
        help=f"level-0 size of every slide (default {default_size})",
    )
    dataset.add_argument(
        "--mpp",
        type=arg_type(float, POSITIVE),
        default=DEFAULT_MPP,
        help=f"um per pixel (default {DEFAULT_MPP})",
    )
    dataset.add_argument("--texture", choices=TEXTURES, default="procedural", help="cell texture source")
    dataset.add_argument(
        "--texture-dir", default=None, help="folder of labelled patches (texture=camelyon16)"
    )
    dataset.add_argument(
        "--version",
        type=int,
        choices=VERSIONS,
        default=None,
        help="generator version: 1 the original, 2 lymph-node anatomy with look-alikes, 3 the same with "
        "the look-alikes placed blind to the lesions, 4 version 3 with a nest pattern at 8-16 um/px on some "
        f"lesions and fewer look-alikes (default: {DEFAULT_VERSION})",
    )
    dataset.add_argument(
        "--centres",
        nargs="+",
        default=None,
        metavar="NAME",
        help="spread the slides over these stain-and-scanner centres, round-robin (magnet.synth.centres: "
        "reference, purple, pale, dark, blurry); the manifest gets a centre column",
    )
    dataset.add_argument(
        "--test-counts",
        type=arg_type(int, AtLeast(1)),
        nargs=4,
        default=None,
        metavar=("NEG", "MACRO", "MICRO", "ITC"),
        help="replace the test split by this many negative, macro, micro and ITC slides from data-set seed "
        "SEED + 1 (a class-enriched test set: each class gets enough positives for its AUROC)",
    )
    dataset.set_defaults(func=run_dataset)

    export = actions.add_parser("export", help="write a virtual slide as a pyramidal TIFF")
    export.add_argument("uri", help="virtual slide, e.g. synth:seed=17,size=8000x8000,lesion=micro")
    export.add_argument("out", help="TIFF file to write")
    export.add_argument(
        "--tile-size",
        type=arg_type(int, AtLeast(16), MultipleOf(16)),
        default=256,
        help="tile side, multiple of 16 (default 256)",
    )
    export.add_argument(
        "--quality",
        type=arg_type(int, Interval(1, 100)),
        default=90,
        help="JPEG quality 1..100 (default 90)",
    )
    export.add_argument(
        "--workers",
        type=arg_type(int, AtLeast(1)),
        default=1,
        help="processes rendering the tiles (default 1); the file is the same with any number",
    )
    export.set_defaults(func=run_export)


def run_dataset(args: argparse.Namespace) -> int:
    from magnet.data.lesions import LESION_CLASSES
    from magnet.outputs import output_folder
    from magnet.synth.dataset import make_dataset, with_enriched_test, write_dataset

    output_folder(args.out)
    if args.texture_dir is not None and args.texture != "camelyon16":
        raise ConfigError("--texture-dir: only meaningful with --texture camelyon16")
    options = {
        "size": args.size,
        "texture": args.texture,
        "mpp": args.mpp,
        "texture_dir": args.texture_dir,
        "version": DEFAULT_VERSION if args.version is None else args.version,
        "centres": args.centres,
    }
    slides = make_dataset(args.n, args.seed, **options)
    if args.test_counts is not None:
        counts = dict(zip(LESION_CLASSES, args.test_counts, strict=True))
        slides = with_enriched_test(slides, counts, args.seed + 1, **options)
    manifest = write_dataset(slides, args.out)
    counts = {c: sum(s.lesion_class == c for s in slides) for c in LESION_CLASSES}
    print(
        f"wrote {manifest} ({len(slides)} slides: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from magnet.slides.tiff_writer import write_pyramidal_tiff
    from magnet.synth.slide import VirtualSlide

    slide = VirtualSlide(args.uri)
    write_pyramidal_tiff(slide, args.out, tile_size=args.tile_size, quality=args.quality,
                         workers=args.workers)
    print(f"wrote {args.out} ({slide.path}, levels {slide.level_dimensions})")
    return 0
