"""Pictures of virtual slides for ``docs/virtual-slides.md``: one per lesion class at three magnifications.

    .venv/bin/python bench/make_synth_figures.py [--out docs/img]

Each picture is three panels of 256 x 256: the whole slide, a 1 mm field (downsample 16, about 2.5x) and a
64 um field at level 0 (40x), both centred on the lesion's edge (on tissue for the negative slide). The
boxes show where the next panel lies. PNGs are palette-quantised to stay small (<= 150 KB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from magnet.synth import VirtualSlide

PANEL = 256
SLIDES = {
    "macro": "synth:seed=1,lesion=macro",
    "micro": "synth:seed=2,lesion=micro",
    "itc": "synth:seed=5,lesion=itc",
    "negative": "synth:seed=4,lesion=negative",
}


def _focus(slide: VirtualSlide) -> tuple[float, float]:
    if slide.lesions:
        x, y = slide.lesions[0][0]  # the outline's first vertex: on the lesion's edge
        return float(x), float(y)
    section = slide.layout.sections[0]
    return section.cx + 0.5 * section.r_min, section.cy


def _box(
    draw: ImageDraw.ImageDraw, centre: tuple[float, float], half: float, origin: tuple[float, float], d: float
) -> None:
    x, y = (centre[0] - origin[0]) / d, (centre[1] - origin[1]) / d
    r = max(half / d, 2.0)
    draw.rectangle([x - r, y - r, x + r, y + r], outline=(20, 20, 20), width=2)


def figure(uri: str) -> Image.Image:
    slide = VirtualSlide(uri)
    w, h = slide.dimensions
    focus = _focus(slide)
    d_whole = max(w, h) / PANEL
    whole = Image.fromarray(slide.render(0, 0, d_whole, PANEL, PANEL))
    panels = [whole]
    fields = [(16.0, PANEL * 16 / 2), (1.0, PANEL / 2)]  # (downsample, half-field in level-0 px)
    origins = [(0.0, 0.0)]
    for d, half in fields:
        origin = (focus[0] - half, focus[1] - half)
        panels.append(Image.fromarray(slide.render(origin[0], origin[1], d, PANEL, PANEL)))
        origins.append(origin)
    downsamples = [d_whole] + [d for d, _ in fields]
    for i, (_, half) in enumerate(fields):
        _box(ImageDraw.Draw(panels[i]), focus, half, origins[i], downsamples[i])
    sheet = Image.new("RGB", (3 * PANEL + 8, PANEL), (255, 255, 255))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * (PANEL + 4), 0))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slides = dict(SLIDES)
    slides["micro-camelyon16"] = "synth:seed=2,lesion=micro,texture=camelyon16"  # the packaged patches
    for name, uri in slides.items():
        path = out / f"synth-{name}.png"
        figure(uri).quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB  {uri}")


if __name__ == "__main__":
    main()
