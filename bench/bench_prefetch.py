"""Benchmark ``magnet predict``'s read-ahead: slides opened and root views read while the model computes.

Runs a MagNet with random weights (the CPU demo recipe's model, ``configs/demo_v1.yaml``, or ``--tiny``) over
``--slides`` virtual slides (``synth:`` URIs; with ``--tiff`` exported to pyramidal JPEG TIFFs first, so that
opening a file and decoding tiles are part of the work) through ``magnet.inference.stream``: once reading
each slide in place (``ahead=0``, the model waits for every read) and once reading ahead (``ahead`` slides,
``workers`` reader threads). The settings alternate for ``--repeats`` rounds on the same slides, and the
median time per setting is reported as slides per second, with the gain. Torch runs on one thread (OMP 1).

With ``--in-flight N`` (N > 1) a third setting reads ahead and predicts N slides at once, each on its own
thread (``stream_predictions(in_flight=N)``), so that the deeper layers' reads of one slide overlap the
model's compute on another. The model is the inference copy ``magnet predict`` runs
(``magnet.inference.fast_model``). ``--distinct K`` exports only K TIFFs and lists them under ``--slides``
names (symbolic links): a cohort of 200 without 200 exports; the files are in the OS cache after the first
round, as on a local disk.

Predictions are checked to be identical across settings: read-ahead may only change the time.

``--latency S`` adds S seconds of waiting to every slide's opening (a ``bench-slow:`` URI scheme that sleeps,
then opens the slide), as slides on network storage or a busy disk have; the wait uses no CPU.

What to expect: the gain is bounded by the share of a slide's time spent opening it and reading its root
views (the only work moved off the model's path; the deeper layers' reads depend on the model's zoom and
stay on it) and by the cores free for the reader threads: waiting (storage latency) overlaps fully, CPU work
(decoding, rendering virtual slides) only on an idle core.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_prefetch.py [--slides 8] [--repeats 3] [--tiff]
[--latency 0.2] [--in-flight 2] [--distinct 4] [--threads 1]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from magnet.config_io import load_config
from magnet.inference.fast_model import inference_copy
from magnet.inference.stream import stream_predictions
from magnet.models.magnet import MagNet
from magnet.slides.base import Slide
from magnet.slides.registry import open_slide, register_scheme
from magnet.training.recipe import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.variant=tiny", "model.view_size=32", "model.read_size=64", "model.final_size=32",
        "model.final_read_size=64", "model.classifier_input_size=32", "model.gru_hidden=8"]


def _model(tiny: bool) -> tuple[MagNet, TrainConfig]:
    overrides = ["data.manifest=unused.csv", *(TINY if tiny else [])]
    config = load_config(TrainConfig, REPO / "configs" / "demo_v1.yaml", overrides)
    torch.manual_seed(0)
    return inference_copy(MagNet(config.model, load_weights=False)), config


def _slides(n: int, size: int, tiff: bool, folder: Path, latency: float, distinct: int) -> list[str]:
    specs = [f"synth:seed={100 + i},size={size}x{size},lesion=negative" for i in range(n)]
    if tiff:
        from magnet.slides.tiff_writer import write_pyramidal_tiff
        from magnet.synth.slide import VirtualSlide

        files = min(n, distinct or n)
        for i, uri in enumerate(specs[:files]):
            write_pyramidal_tiff(VirtualSlide(uri), folder / f"slide{i}.tif")
        for i in range(files, n):  # the same files again under new names: distinct slides to predict
            (folder / f"slide{i}.tif").symlink_to(folder / f"slide{i % files}.tif")
        specs = [str(folder / f"slide{i}.tif") for i in range(n)]
    if latency > 0:

        def slow_open(uri: str) -> Slide:
            time.sleep(latency)
            return open_slide(uri.split(":", 1)[1])

        register_scheme("bench-slow", slow_open)
        specs = [f"bench-slow:{s}" for s in specs]
    return specs


def _run(model: MagNet, config: TrainConfig, slides: list[str], *, ahead: int, workers: int,
         batch_size: int, in_flight: int = 1) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    preds = list(stream_predictions(model, slides, grey_filter=config.data.grey_filter,
                                    reader_threads=config.data.reader_threads, batch_size=batch_size,
                                    workers=workers, ahead=ahead, in_flight=in_flight))
    seconds = time.perf_counter() - t0
    bad = [p.error for p in preds if p.error]
    if bad:
        raise SystemExit(f"a slide failed: {bad[0]}")
    return seconds, [p.probability for p in sorted(preds, key=lambda p: p.slide)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--size", type=int, default=32768, help="virtual slide side, pixels (default 32768)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ahead", type=int, default=2)
    parser.add_argument("--tiff", action="store_true", help="export the slides to pyramidal TIFFs first")
    parser.add_argument("--tiny", action="store_true", help="a smaller model than the demo recipe's")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds of storage latency added to every slide's opening (default 0)")
    parser.add_argument("--in-flight", type=int, default=1, help="add a setting with this many in flight")
    parser.add_argument("--distinct", type=int, default=0, help="with --tiff: export only this many files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, config = _model(args.tiny)
    settings = {"in place (ahead 0)": (0, 1, 1), f"ahead {args.ahead}, {args.workers} workers":
                (args.ahead, args.workers, 1)}
    if args.in_flight > 1:
        name = f"ahead {args.ahead}, {args.in_flight} in flight"
        settings[name] = (args.ahead, args.workers, args.in_flight)
    with tempfile.TemporaryDirectory(prefix="bench-prefetch-") as tmp:
        slides = _slides(args.slides, args.size, args.tiff, Path(tmp), args.latency, args.distinct)
        _run(model, config, slides[:1], ahead=0, workers=1, batch_size=1)  # warm-up: imports, allocator
        times: dict[str, list[float]] = {name: [] for name in settings}
        reference: list[float] | None = None
        for _ in range(args.repeats):
            for name, (ahead, workers, in_flight) in settings.items():
                seconds, probs = _run(model, config, slides, ahead=ahead, workers=workers,
                                      batch_size=args.batch_size, in_flight=in_flight)
                times[name].append(seconds)
                if reference is None:
                    reference = probs
                elif probs != reference:
                    raise SystemExit(f"{name}: predictions differ from the first run")
    print(f"# bench_prefetch: {args.slides} {'TIFF' if args.tiff else 'synth:'} slides of {args.size}², "
          f"opening latency {args.latency:g} s, "
          f"model {'tiny' if args.tiny else 'demo recipe'}, batch {args.batch_size}, "
          f"{args.repeats} rounds, torch threads {args.threads}, "
          f"reader threads {config.data.reader_threads}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    base = statistics.median(times["in place (ahead 0)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28s} median {median:7.2f} s  {args.slides / median:6.3f} slides/s  "
              f"x{base / median:4.2f}  (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
