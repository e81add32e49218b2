"""Seconds per slide of a MagNet prediction from a pyramidal TIFF, broken into opening, reads and model.

For each model (``tiny``, ``magnet3``; random weights: the time does not depend on them) and each way of
running it, every trial opens the TIFF afresh through ``open_slide`` (OpenSlide for a generic TIFF), predicts
it, and closes it, as ``magnet predict`` does for each slide of a cohort (model load excluded; the file's
pages sit in the OS cache after the first trial, as they would on a local disk read twice):

- ``plain``: the trained model as it is, auxiliary classifiers included (``magnet predict`` before the
  inference copy);
- ``no aux``: the same model without its auxiliary classifiers (``MagNet.forward(auxiliary=False)``);
- ``prepared``: ``magnet.inference.fast_model.inference_copy`` (batch norms folded, channels-last
  classifier), no auxiliary classifiers: what ``magnet predict``, ``evaluate`` and ``explain`` run now;
- ``prepared bf16``: the same with the classifier CNN in bfloat16 (``magnet predict --precision bf16``).

The ways alternate trial by trial (so a change of machine load hits them alike) and the median of
``--trials`` is reported, with the reads' share (time inside the region reads, decoding and resizing
included) and the level-0 pixels decoded per slide. The TIFF is written first when absent: ``--side``
(default 100,000, a 25-mm slide at 0.25 um/px) of a version-2 virtual slide as a JPEG pyramidal TIFF
(tens of minutes on one core).

    .venv/bin/python bench/predict_speed.py --tiff /tmp/s/slide.tif [--threads 2] [--trials 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from magnet.inference.fast_model import inference_copy
from magnet.models.magnet import MagNet
from magnet.models.registry import build_model
from magnet.slides.reader import RegionReader
from magnet.slides.registry import open_slide

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import TimedSource  # noqa: E402

WAYS = ("plain", "no aux", "prepared", "prepared bf16")


def one_slide(model: MagNet, tiff: Path, auxiliary: bool, reader_threads: int) -> dict[str, float]:
    start = time.perf_counter()
    slide = open_slide(str(tiff))
    reader = RegionReader(slide, threads=reader_threads)
    opened = time.perf_counter()
    clock = [0.0]
    with torch.no_grad():
        model([TimedSource(reader, clock)], auxiliary=auxiliary)
    done = time.perf_counter()
    reader.close()
    slide.close()
    return {"open": opened - start, "reads": clock[0], "model": done - opened - clock[0],
            "total": done - start, "decoded": float(reader.pixels_decoded)}


def measure(variant: str, tiff: Path, trials: int, reader_threads: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    plain = build_model(variant).eval()
    models = {"plain": (plain, True), "no aux": (plain, False), "prepared": (inference_copy(plain), False),
              "prepared bf16": (inference_copy(plain, "bf16"), False)}
    for model, auxiliary in models.values():  # warm-up: allocators, oneDNN kernels, the OS file cache
        one_slide(model, tiff, auxiliary, reader_threads)
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for _ in range(trials):
        for way in WAYS:
            model, auxiliary = models[way]
            runs[way].append(one_slide(model, tiff, auxiliary, reader_threads))
    return {way: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            for way, rows in runs.items()}


def export(tiff: Path, side: int, seed: int) -> None:
    from magnet.slides.tiff_writer import write_pyramidal_tiff

    tiff.parent.mkdir(parents=True, exist_ok=True)
    with open_slide(f"synth:seed={seed},size={side}x{side},lesion=micro,version=2") as slide:
        write_pyramidal_tiff(slide, tiff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiff", type=Path, required=True, help="pyramidal TIFF (written when absent)")
    parser.add_argument("--side", type=int, default=100_000, help="side of the virtual slide to export")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--models", nargs="+", default=["tiny", "magnet3"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--reader-threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.tiff.exists():
        export(args.tiff, args.side, args.seed)
    with open_slide(str(args.tiff)) as slide:
        size = slide.dimensions
    print(f"{args.tiff} ({size[0]} x {size[1]}), {platform.processor() or platform.machine()}, "
          f"{args.threads} torch threads, {args.reader_threads} reader threads, median of {args.trials}")
    print("| model | way | s/slide | open s | reads s | model s | reads share | decoded Mpx |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.models:
        rows = measure(variant, args.tiff, args.trials, args.reader_threads)
        for way, r in rows.items():
            print(f"| {variant} | {way} | {r['total']:.3f} | {r['open']:.3f} | {r['reads']:.3f} | "
                  f"{r['model']:.3f} | {r['reads'] / r['total']:.0%} | {r['decoded'] / 1e6:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
