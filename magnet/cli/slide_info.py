"""``magnet slide-info PATH``: what a slide file (or virtual-slide URI) holds, and optionally a thumbnail.

Prints the format/vendor, the backend that opened it, level-0 size, every level with its size and
downsample, microns per pixel and the associated images. ``--json`` prints one JSON object instead (keys:
``path``, ``backend``, ``vendor``, ``width``, ``height``, ``level_count``, ``level_dimensions``,
``level_downsamples``, ``mpp``, ``associated_images``), for scripts and other tools.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from magnet import strict_json
from magnet.domains import AtLeast, arg_type
from magnet.errors import MagnetError
from magnet.outputs import output_file
from magnet.slides import Slide, open_slide

DEFAULT_THUMBNAIL_SIZE = 512  # longer side in pixels: enough to see tissue layout, cheap to read


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "slide-info",
        help="show levels, sizes, mpp and vendor of a slide; optionally save a thumbnail",
        description="Show what a slide file holds: format, levels, sizes, downsamples, mpp.",
    )
    parser.add_argument("path", help="slide file (SVS, TIFF, OME-TIFF, DICOM, PNG, ...) or URI (synth:...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--thumbnail", metavar="OUT.png", help="save a thumbnail of the whole slide here")
    parser.add_argument(
        "--thumbnail-size",
        type=arg_type(int, AtLeast(1)),
        default=DEFAULT_THUMBNAIL_SIZE,
        metavar="N",
        help=f"longer side of the thumbnail in pixels (default {DEFAULT_THUMBNAIL_SIZE})",
    )
    parser.set_defaults(func=run)


def slide_summary(slide: Slide) -> dict[str, Any]:
    """The facts ``slide-info --json`` prints, as plain JSON types."""
    width, height = slide.dimensions
    return {
        "path": slide.path,
        "backend": slide.backend,
        "vendor": slide.vendor,
        "width": width,
        "height": height,
        "level_count": slide.level_count,
        "level_dimensions": [[w, h] for w, h in slide.level_dimensions],
        "level_downsamples": [float(d) for d in slide.level_downsamples],
        "mpp": None if slide.mpp is None else [float(slide.mpp[0]), float(slide.mpp[1])],
        "associated_images": sorted(slide.associated_images),
    }


def format_summary(info: dict[str, Any]) -> str:
    """Human-readable text of ``slide_summary``."""
    mpp = info["mpp"]
    lines = [
        f"path:        {info['path']}",
        f"format:      {info['vendor']} (backend: {info['backend']})",
        f"size:        {info['width']} x {info['height']} pixels (level 0)",
        f"mpp:         {'unknown' if mpp is None else f'{mpp[0]:.4g} x {mpp[1]:.4g} µm/pixel'}",
        f"levels:      {info['level_count']}",
    ]
    for level, ((w, h), down) in enumerate(
        zip(info["level_dimensions"], info["level_downsamples"], strict=True)
    ):
        lines.append(f"  level {level}: {w} x {h}  downsample {down:.4f}")
    names = info["associated_images"]
    lines.append(f"associated:  {', '.join(names) if names else 'none'}")
    return "\n".join(lines)


def save_thumbnail(slide: Slide, out: str, max_size: int) -> None:
    from PIL import Image

    target = Path(out)
    try:
        Image.fromarray(slide.thumbnail(max_size)).save(target)
    except (OSError, ValueError) as exc:  # unknown extension, permission denied, disk full
        raise MagnetError(f"{out}: cannot save thumbnail ({exc})") from None


def run(args: argparse.Namespace) -> int:
    if args.thumbnail:
        output_file(args.thumbnail)  # before the slide is read
    with open_slide(args.path) as slide:
        info = slide_summary(slide)
        if args.thumbnail:
            save_thumbnail(slide, args.thumbnail, args.thumbnail_size)
    if args.json:
        print(strict_json.dumps(info))
    else:
        print(format_summary(info))
        if args.thumbnail:
            print(f"thumbnail:   {args.thumbnail}")
    return 0
