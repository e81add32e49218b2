"""Screenshots of a ``magnet explain`` folder as a person sees it: every page rendered in headless Chromium.

    .venv/bin/python bench/screenshot_reports.py EXPLAIN_DIR --out SHOTS_DIR [--width 1280] [--chromium PATH]

Writes ``SHOTS_DIR/index.png`` and one ``SHOTS_DIR/<slide folder>.png`` per ``<slide folder>/report.html``.
Why a real browser: the reports are read in one, and what a person trips over (a legend that hides the
tissue, labels on top of each other, a figure too wide for the page) only shows once the page is laid out.

Chromium's ``--screenshot`` captures the window, not the page; to capture the whole page the window is made
``--max-height`` tall and the uniform background below the page's end is cropped off (a page longer than
that is cut, and said so). Needs the ``chromium`` binary (Debian: ``apt-get install -y chromium``); no
Python package beyond Pillow, which magnet already depends on. Runs offline: the pages fetch nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# White space kept below the page's last non-background row when the screenshot is cropped.
BOTTOM_MARGIN = 24
PAGE_END_GAP = 8  # browsers' default body margin, in pixels
SECONDS_PER_PAGE = 60


class ScreenshotError(Exception):
    """A problem the caller reports as one line (no chromium, a page chromium could not render)."""


def find_chromium(explicit: str | None = None) -> str:
    """The path of a Chromium (or Chrome) binary: ``explicit`` if given, else the first on ``PATH``."""
    candidates: tuple[str, ...] = (explicit,) if explicit else CHROMIUM_NAMES
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    wanted = explicit or " / ".join(CHROMIUM_NAMES)
    raise ScreenshotError(f"no Chromium found ({wanted}): install it (Debian: apt-get install -y chromium) "
                          "or pass --chromium PATH")


def report_pages(explain_dir: Path) -> list[tuple[str, Path]]:
    """``(screenshot name, page)`` for ``index.html`` and each ``<slide>/report.html``, index first."""
    index = explain_dir / "index.html"
    if not index.is_file():
        raise ScreenshotError(f"{explain_dir}: no index.html (is this a `magnet explain --out` folder?)")
    pages = [("index", index)]
    pages += [(report.parent.name, report) for report in sorted(explain_dir.glob("*/report.html"))]
    return pages


def crop_to_page(png: Path) -> bool:
    """Crop the background below the page's content off ``png``; False when the page fills the window.

    The background is the colour of the bottom-left pixel (the page's body background); the page ends at
    the last row holding any other colour. Content within ``PAGE_END_GAP`` rows of the window's bottom means
    the page went on below it (a page ends with at least its body's margin of background).
    """
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    background = rgb.getpixel((0, height - 1))
    plain = Image.new("RGB", (width, height), background)
    diff = ImageChops.difference(rgb, plain).convert("L")
    box = diff.getbbox()
    bottom = box[3] if box else 0
    rgb.crop((0, 0, width, min(height, bottom + BOTTOM_MARGIN))).save(png, optimize=True)
    return bottom <= height - PAGE_END_GAP


def screenshot(chromium: str, page: Path, png: Path, *, width: int, max_height: int) -> bool:
    """Render ``page`` in headless Chromium into ``png`` (whole page); False when cut at ``max_height``."""
    with tempfile.TemporaryDirectory(prefix="magnet-shots-") as profile:
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
            f"--window-size={width},{max_height}", f"--screenshot={png}", page.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS_PER_PAGE)
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(f"{page}: Chromium did not finish in {SECONDS_PER_PAGE} s") from exc
    if done.returncode != 0 or not png.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScreenshotError(f"{page}: Chromium failed (exit {done.returncode}): {last}")
    return crop_to_page(png)


def screenshot_reports(explain_dir: Path, out: Path, *, width: int = 1280, max_height: int = 12000,
                       chromium: str | None = None) -> list[Path]:
    """Screenshot every page of ``explain_dir`` into ``out``; returns the PNGs written, index first."""
    binary = find_chromium(chromium)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, page in report_pages(explain_dir):
        png = out / f"{name}.png"
        whole = screenshot(binary, page, png, width=width, max_height=max_height)
        note = "" if whole else f" (cut at {max_height} px: raise --max-height)"
        print(f"{page} -> {png}{note}")
        written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("explain_dir", type=Path, help="a `magnet explain --out` folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG screenshots")
    parser.add_argument("--width", type=int, default=1280, help="browser window width, px (default 1280)")
    parser.add_argument("--max-height", type=int, default=12000,
                        help="tallest page captured whole, px (default 12000)")
    parser.add_argument("--chromium", help="Chromium or Chrome binary (default: the first on PATH)")
    args = parser.parse_args(argv)
    try:
        screenshot_reports(args.explain_dir, args.out, width=args.width, max_height=args.max_height,
                           chromium=args.chromium)
    except ScreenshotError as exc:
        print(f"screenshot_reports: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
