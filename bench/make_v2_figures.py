"""Pictures of version-2 and -4 virtual slides for ``docs/virtual-slides.md``: lesion vs look-alike, vs a real
slide, and version 4's nests.

    .venv/bin/python bench/make_v2_figures.py [--out docs/img] [--dicom PATH]

``v2-lesion-vs-lookalike.png``: one version-2 slide (``URI``, a micro-metastasis of 820 um) and, of its
look-alikes whose ``mimics`` is the slide's class, the one nearest in extent (a germinal centre of 814 um).
Two rows of four 256 x 256 panels: the top row centred on the metastasis, the bottom row on the look-alike;
the columns are drawn at exactly 16, 4, 1 and 0.25 um per output pixel (``VirtualSlide.render`` with
downsample = um/px / 0.25), i.e. fields of 4.1 mm, 1 mm, 256 um and 64 um. A thin box marks where the next
column's field lies.

``v2-vs-camelyon16-dicom.png``: the low-resolution Camelyon16 DICOM (a whole slide at about 29 um/px, read
from level 0 with ``magnet.slides.open_slide``) beside the same version-2 slide rendered whole at the DICOM's
own um/px, so that both have one pixel scale. The DICOM's glass holds the same two serial sections twice;
only its left half is shown (one copy of each section), which keeps the PNG under 200 KB. ``--dicom`` names
the file; the default is the project's test-data folder, which is not part of the repository. Without the
file this picture is skipped with a message and the other one is still written.

``v4-nests.png``: one version-4 slide (``NESTS_URI``, a micro-metastasis of 1058 um drawn with the nest
pattern, magnet/synth/nests.py), and of its look-alikes whose ``mimics`` is the slide's class the one nearest
in extent with nests and the one without; columns at 32, 16, 8 and 1 um/px.

The PNGs are palette images of at most 200 KB. The palette is split between groups of panels, each with a
quantiser that suits it (see ``_quantise``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from magnet.synth import VirtualSlide
from magnet.synth.lookalikes import Lookalike

URI = "synth:seed=4,lesion=micro,version=2"
DEFAULT_DICOM = "../shared/data/slides/camelyon16_lowres_multiframe.dcm"
PANEL = 256
GAP = 4
UM_PER_PX = (16.0, 4.0, 1.0, 0.25)
NESTS_URI = "synth:seed=31000001,size=32768x32768,lesion=micro,version=4"
NESTS_UM_PER_PX = (32.0, 16.0, 8.0, 1.0)
LABEL_STRIP = 26
WHITE = (255, 255, 255)
INK = (20, 20, 20)

Box = tuple[int, int, int, int]
Group = tuple[list[Box], int, str]  # boxes quantised together, palette entries, quantiser


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _field(um_per_px: float) -> str:
    field = um_per_px * PANEL
    return f"{field / 1000:.3g} mm" if field >= 1000 else f"{field:g} um"


def _lookalike(slide: VirtualSlide, extent_um: float) -> Lookalike:
    """Of the look-alikes whose ``mimics`` is the slide's lesion class, the one nearest in extent."""
    matches = [item for item in slide.lookalikes if item.mimics == slide.lesion_class]
    if not matches:
        raise SystemExit(f"{slide.path}: no look-alike mimics {slide.lesion_class}; pick another seed")
    return min(matches, key=lambda item: abs(np.log(item.extent_um / extent_um)))


def _row(slide: VirtualSlide, centre: tuple[float, float], scales: tuple[float, ...]) -> list[Image.Image]:
    panels = []
    for i, um in enumerate(scales):
        d = um / slide.spec.mpp  # level-0 px per output px
        x0, y0 = centre[0] - PANEL * d / 2, centre[1] - PANEL * d / 2
        panel = Image.fromarray(slide.render(x0, y0, d, PANEL, PANEL))
        if i + 1 < len(scales):  # where the next field lies
            r, c = PANEL * scales[i + 1] / um / 2, PANEL / 2
            ImageDraw.Draw(panel).rectangle([c - r, c - r, c + r, c + r], outline=INK, width=1)
        panels.append(panel)
    return panels


def _sheet(slide: VirtualSlide, rows: list[tuple[str, tuple[float, float]]],
           scales: tuple[float, ...]) -> tuple[Image.Image, list[Group]]:
    """One labelled row of panels per ``(label, centre)``, one column per µm/px of ``scales``."""
    font, small = _font(15), _font(13)
    head, strip = 40, 22
    width = len(scales) * PANEL + (len(scales) - 1) * GAP
    sheet = Image.new("RGB", (width, head + len(rows) * (strip + PANEL) + (len(rows) - 1) * GAP), WHITE)
    draw = ImageDraw.Draw(sheet)
    for j, um in enumerate(scales):
        x = j * (PANEL + GAP) + 4
        draw.text((x, 3), f"{um:g} um/px", fill=INK, font=font)
        draw.text((x, 21), f"field {_field(um)}", fill=INK, font=small)
    low: list[Box] = []
    fine: list[Box] = []
    for i, (label, centre) in enumerate(rows):
        y = head + i * (strip + PANEL + GAP)
        draw.text((4, y + 3), label, fill=INK, font=font)
        for j, panel in enumerate(_row(slide, centre, scales)):
            x = j * (PANEL + GAP)
            sheet.paste(panel, (x, y + strip))
            (fine if j else low).append((x, y + strip, x + PANEL, y + strip + PANEL))
    return sheet, [(low, 64, "mediancut"), (fine, 176, "octree")]


def lesion_vs_lookalike(uri: str = URI) -> tuple[Image.Image, list[Group]]:
    slide = VirtualSlide(uri)
    lesion = slide.layout.lesions[0]  # the largest: it gives the slide its class
    look = _lookalike(slide, lesion.extent_um)
    kind, look_centre = look.kind.replace("_", " "), (look.shape.cx, look.shape.cy)
    rows = [
        (f"metastasis ({slide.lesion_class}, {lesion.extent_um:.0f} um)", (lesion.shape.cx, lesion.shape.cy)),
        (f"look-alike: {kind} ({look.extent_um:.0f} um, mimics {look.mimics})", look_centre),
    ]
    return _sheet(slide, rows, UM_PER_PX)


def nests(uri: str = NESTS_URI) -> tuple[Image.Image, list[Group]]:
    """Version 4: the slide's largest lesion (drawn with nests), the nearest-sized look-alike of its class
    drawn with nests and the nearest-sized one drawn without."""
    slide = VirtualSlide(uri)
    lesion = slide.layout.lesions[0]
    nested_outlines = slide.nested  # a derived property: computed once here, not per shape tested

    def has_nests(polygon: np.ndarray) -> bool:
        return any(np.array_equal(polygon, nested) for nested in nested_outlines)

    if not has_nests(lesion.shape.polygon()):
        raise SystemExit(f"{uri}: its largest lesion has no nests; pick another seed")
    rows = [(f"metastasis with nests ({slide.lesion_class}, {lesion.extent_um:.0f} um)",
             (lesion.shape.cx, lesion.shape.cy))]
    for want, name in ((True, "with"), (False, "without")):
        matches = [item for item in slide.lookalikes
                   if item.mimics == slide.lesion_class and has_nests(item.polygon) == want]
        if not matches:
            raise SystemExit(f"{uri}: no look-alike of its class {name} nests; pick another seed")
        look = min(matches, key=lambda item: abs(np.log(item.extent_um / lesion.extent_um)))
        rows.append((f"{look.kind.replace('_', ' ')} {name} nests ({look.extent_um:.0f} um)",
                     (look.shape.cx, look.shape.cy)))
    return _sheet(slide, rows, NESTS_UM_PER_PX)


def _labelled(image: Image.Image, label: str, height: int, font: ImageFont.ImageFont) -> Image.Image:
    out = Image.new("RGB", (image.width, LABEL_STRIP + height), WHITE)
    out.paste(image, (0, LABEL_STRIP))
    ImageDraw.Draw(out).text((4, 5), label, fill=INK, font=font)
    return out


def vs_dicom(dicom: Path, uri: str = URI) -> tuple[Image.Image, list[Group]]:
    from magnet.slides import open_slide

    real = open_slide(str(dicom))
    w, h = real.level_dimensions[0]
    mpp = real.mpp[0] if real.mpp else 28.97
    half = w // 2
    real_img = Image.fromarray(np.asarray(real.read_region((0, 0), 0, (half, h)))[..., :3])
    slide = VirtualSlide(uri)
    d = mpp / slide.spec.mpp
    vw, vh = (round(side / d) for side in slide.dimensions)
    virtual_img = Image.fromarray(slide.render(0.0, 0.0, d, vw, vh))
    height = max(h, vh)
    font = _font(16)
    real_label = f"real: Camelyon16, {mpp:.2f} um/px (left half, {half} x {h} px)"
    left = _labelled(real_img, real_label, height, font)
    right = _labelled(virtual_img, f"virtual v2, same um/px (whole slide, {vw} x {vh} px)", height, font)
    x = left.width + 3 * GAP
    sheet = Image.new("RGB", (x + right.width, left.height), WHITE)
    sheet.paste(left, (0, 0))
    sheet.paste(right, (x, 0))
    return sheet, [
        ([(0, LABEL_STRIP, half, LABEL_STRIP + h)], 96, "octree"),
        ([(x, LABEL_STRIP, x + vw, LABEL_STRIP + vh)], 128, "mixed"),
    ]


def _quantise(image: Image.Image, colours: int, how: str) -> Image.Image:
    """``mediancut`` gives the most frequent colours the finest steps (it keeps the faint shades of a
    low-power field). ``octree`` splits colour space evenly, so it does not spend the palette on the pixel
    noise of large flat areas (noisy cell-level fields stay small as PNG). ``mixed``: median cut plus 16
    entries spread over the distinct colours, each pixel mapped to the nearest entry (keeps rare colours
    such as pen strokes, which median cut alone turns into tissue colour)."""
    if how == "mediancut":
        return image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    if how == "octree":
        return image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE)
    median = Image.Quantize.MEDIANCUT
    common = image.quantize(colors=colours - 16, method=median)
    distinct = np.unique(np.asarray(image).reshape(-1, 3) // 8, axis=0) * 8 + 4
    spread = Image.fromarray(distinct[None].astype(np.uint8)).quantize(colors=16, method=median)
    palette = common.getpalette()[: 3 * _used(common)] + spread.getpalette()[: 3 * _used(spread)]
    palette += palette[-3:] * (256 - len(palette) // 3)  # pad with a used colour, never with black
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette)
    return image.quantize(palette=holder, dither=Image.Dither.NONE)


def _used(quantised: Image.Image) -> int:
    return int(np.asarray(quantised).max()) + 1


def _save(sheet: Image.Image, groups: list[Group], path: Path, rest: int = 16) -> None:
    """Palette PNG: each group of boxes quantised together to its own colours, the rest (white, labels) to
    ``rest`` colours by median cut."""
    index = np.zeros((sheet.height, sheet.width), np.uint8)
    palette: list[int] = []
    back = sheet.copy()
    for boxes, _, _ in groups:
        for box in boxes:
            back.paste(WHITE, box)
    whole = (0, 0, sheet.width, sheet.height)
    for boxes, colours, how in [([whole], rest, "mediancut"), *groups]:
        crops = [back] if boxes == [whole] else [sheet.crop(box) for box in boxes]
        mosaic = Image.new("RGB", (max(c.width for c in crops), sum(c.height for c in crops)), WHITE)
        tops = np.cumsum([0] + [c.height for c in crops])
        for crop, top in zip(crops, tops, strict=False):
            mosaic.paste(crop, (0, int(top)))
        quantised = _quantise(mosaic, colours, how)
        idx = np.asarray(quantised).astype(np.int32)
        idx += len(palette) // 3
        for box, crop, top in zip(boxes, crops, tops, strict=False):
            index[box[1] : box[3], box[0] : box[2]] = idx[top : top + crop.height, : crop.width]
        palette += quantised.getpalette()[: 3 * _used(quantised)]
    if len(palette) > 3 * 256:
        raise ValueError(f"{path}: {len(palette) // 3} palette entries, more than 256")
    out = Image.fromarray(index, "P")
    out.putpalette(palette)
    out.save(path, optimize=True)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--dicom", default=DEFAULT_DICOM, help="the low-resolution Camelyon16 DICOM")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _save(*lesion_vs_lookalike(), out / "v2-lesion-vs-lookalike.png")
    _save(*nests(), out / "v4-nests.png")
    dicom = Path(args.dicom)
    if dicom.is_file():
        _save(*vs_dicom(dicom), out / "v2-vs-camelyon16-dicom.png")
    else:
        print(f"skipped v2-vs-camelyon16-dicom.png: no DICOM at {dicom} (give its path with --dicom)")


if __name__ == "__main__":
    main()
