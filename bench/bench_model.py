"""Benchmark: MagNet forward and forward+backward time per slide, peak memory, share of time reading.

Runs ``tiny``, ``magnet3`` and ``magnet4`` on CPU (2 threads by default) on in-memory textured slides
(``TensorRegionSource``), reads included. Each model runs in a fresh process so that the peak resident
memory (``ru_maxrss``) belongs to that model alone; "peak MiB" is the growth of the peak over the
process's footprint after the model and slides were built (activations, gradients, reads).

    .venv/bin/python bench/bench_model.py [--threads 2] [--repeats 2] [--models tiny magnet3 magnet4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import time
from dataclasses import dataclass

import torch

# (model, slides per batch): the paper trains magnet3 at batch 16 and magnet4 at 8 on a GPU; on CPU one
# slide is what an inference call does. tiny runs at the batch of the CPU demo.
BATCH = {"tiny": 4, "magnet3": 1, "magnet4": 1}
SLIDE_SIDE = 2048


@dataclass
class Row:
    model: str
    batch: int
    params_m: float
    forward_s: float
    forward_read_share: float
    train_s: float
    train_read_share: float
    peak_mib: float


class TimedSource:
    """RegionSource proxy that adds the time spent in ``read`` to a shared counter."""

    def __init__(self, source: object, clock: list[float]) -> None:
        self.source = source
        self.clock = clock

    @property
    def slide_size(self) -> tuple[int, int]:
        return self.source.slide_size  # type: ignore[attr-defined,no-any-return]

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        start = time.perf_counter()
        out: torch.Tensor = self.source.read(rois, size)  # type: ignore[attr-defined]
        self.clock[0] += time.perf_counter() - start
        return out


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _run(name: str, threads: int, repeats: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    from magnet.models import build_model
    from magnet.slides.tensor_source import TensorRegionSource
    from magnet.training.losses import magnet_loss

    torch.manual_seed(0)
    batch = BATCH[name]
    model = build_model(name)
    clock = [0.0]
    generator = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, SLIDE_SIDE, SLIDE_SIDE, generator=generator) * 0.6 + 0.2) for _ in range(batch)]
    sources = [TimedSource(TensorRegionSource(image), clock) for image in images]
    labels = torch.tensor([i % 2 for i in range(batch)], dtype=torch.float32)
    base = _max_rss_mib()

    def forward_only() -> None:
        model.eval()
        with torch.no_grad():
            model(sources)

    def train_step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        magnet_loss(model(sources, generator=generator), labels).total.backward()

    def timed(step: object) -> tuple[float, float]:
        step()  # type: ignore[operator]  # warm-up
        clock[0], start = 0.0, time.perf_counter()
        for _ in range(repeats):
            step()  # type: ignore[operator]
        total = time.perf_counter() - start
        return total / repeats / batch, clock[0] / total

    forward_s, forward_share = timed(forward_only)
    train_s, train_share = timed(train_step)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    queue.put(Row(name, batch, params, forward_s, forward_share, train_s, train_share, _max_rss_mib() - base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["tiny", "magnet3", "magnet4"], choices=sorted(BATCH))
    args = parser.parse_args()
    context = mp.get_context("spawn")
    rows = []
    for name in args.models:
        queue: mp.Queue = context.Queue()
        process = context.Process(target=_run, args=(name, args.threads, args.repeats, queue))
        process.start()
        rows.append(queue.get())
        process.join()
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"in-memory {SLIDE_SIDE}x{SLIDE_SIDE} slides, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| model | batch | params (M) | fwd s/slide | read share | fwd+bwd s/slide | read share | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.model} | {r.batch} | {r.params_m:.1f} | {r.forward_s:.3f} | {r.forward_read_share:.0%} | "
            f"{r.train_s:.3f} | {r.train_read_share:.0%} | {r.peak_mib:.0f} |"
        )


if __name__ == "__main__":
    main()
