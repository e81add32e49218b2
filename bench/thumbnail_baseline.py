"""The thumbnail baseline alone: a small CNN on the grey-filtered whole-slide view, slide labels only.

Trains on the train split of ``--train-manifest`` (validation split: model selection) and scores every row of
``--test-manifest`` (or, without one, the training manifest's test split). Without manifests it makes the
data sets of bench/zoom_table.py: ``make_dataset(--n, --seed)`` for training, and a class-enriched test set
of ``--test-counts`` (negative, macro, micro, ITC) taken in order from ``make_dataset(2 * n, seed + 1)``
(disjoint seeds). Each size in ``--size`` is one row; the views of all sizes are read in one pass. Prints
the Table-1 AUROCs with 95 % intervals and writes ``--out``/thumbnail.json.

    .venv/bin/python bench/thumbnail_baseline.py --n 600 --seed 1 --size 224 1024 --out /tmp/thumb
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

from magnet.baselines.thumbnail import ThumbnailConfig, read_views, run_thumbnail, views_by_slide
from magnet.data.manifest import read_manifest
from magnet.metrics.auroc import TABLE1_COLUMNS, format_table1
from magnet.synth.dataset import DEFAULT_VERSION, make_dataset, take_per_class, write_dataset

CLASSES = ("negative", "macro", "micro", "itc")


def make_sets(out: Path, n: int, seed: int, counts: dict[str, int], version: int) -> tuple[Path, Path]:
    """``make_dataset(n, seed)`` and the first ``counts`` slides per class of ``make_dataset(2n, seed+1)``."""
    train_manifest = write_dataset(make_dataset(n, seed, version=version), out / "data-train")
    test = take_per_class(make_dataset(2 * n, seed + 1, version=version), counts)
    return train_manifest, write_dataset(test, out / "data-test")


def row_cells(metrics: dict) -> str:  # type: ignore[type-arg]
    cells = []
    for key, _, _ in TABLE1_COLUMNS:
        entry = metrics.get(key) or {}
        if entry.get("auroc") is None:
            cells.append("–")
        elif entry.get("ci95"):
            cells.append(f"{entry['auroc']:.3f} ({entry['ci95'][0]:.2f}–{entry['ci95'][1]:.2f})")
        else:
            cells.append(f"{entry['auroc']:.3f}")
    return " | ".join(cells)


def show_epoch(size: int, row: dict[str, float | None]) -> None:
    print(f"  {size}²: " + ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in row.items()),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-manifest", help="train + validation splits (+ test without --test-manifest)")
    parser.add_argument("--test-manifest", help="every row is scored")
    parser.add_argument("--n", type=int, default=600, help="made training set: slides")
    parser.add_argument("--seed", type=int, default=1, help="made training set: data-set seed")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION,
                        help=f"made data sets: virtual-slide generator version (default {DEFAULT_VERSION})")
    parser.add_argument("--test-counts", type=int, nargs=4, default=[300, 70, 70, 70],
                        metavar=("NEG", "MACRO", "MICRO", "ITC"), help="made test set: slides per class")
    parser.add_argument("--size", type=int, nargs="+", default=[224])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=ThumbnailConfig.epochs)
    parser.add_argument("--cache", help="folder for the views on disk (reused by later runs)")
    parser.add_argument("--out", default="/tmp/thumbnail-baseline")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="1: on a shared 2-core machine two threads spin-wait (3x slower per step)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.train_manifest:
        train_path, test_path = args.train_manifest, args.test_manifest
    else:
        counts = dict(zip(CLASSES, args.test_counts, strict=True))
        train_path, test_path = make_sets(out, args.n, args.seed, counts, args.version)
    rows = read_manifest(train_path, check_slides=False).rows
    test_rows = read_manifest(test_path, check_slides=False).rows if test_path else None
    slides = list(dict.fromkeys(
        [r.slide for r in rows if r.split in ("train", "validation") or test_rows is None]
        + [r.slide for r in test_rows or []]))

    start = time.perf_counter()
    views = read_views(slides, args.size, cache_dir=args.cache,
                       progress=lambda i, n: print(f"read {i}/{n}", flush=True) if i % 100 == 0 else None)
    read_minutes = (time.perf_counter() - start) / 60
    skipped = views[args.size[0]].skipped
    print(f"read {len(slides)} slides at {args.size} in {read_minutes:.1f} min; {len(skipped)} left out",
          flush=True)
    for spec, reason in skipped:
        print(f"  left out: {spec}: {reason}")

    results = []
    for size in args.size:
        for train_seed in args.train_seeds:
            cfg = ThumbnailConfig(size=size, epochs=args.epochs, seed=train_seed)
            result = run_thumbnail(rows, cfg, test=test_rows, views=views_by_slide(views[size]),
                                   progress=partial(show_epoch, size))
            print(format_table1(result.metrics, name=f"thumbnail {size}² seed {train_seed}", decimals=1))
            print(f"best epoch {result.best_epoch}; {result.minutes_train:.1f} min training", flush=True)
            results.append({**result.summary(), "train_seed": train_seed,
                            "read_minutes_all_sizes": read_minutes, "skipped": [list(s) for s in skipped]})

    print(f"\ntrain {train_path}, test {test_path or 'its test split'}")
    print("| thumbnail | seed | Macro | Micro | ITC | Macro & Micro | All | best epoch | train min |")
    print("|---" * 9 + "|")
    for r in results:
        print(f"| {r['size']}² | {r['train_seed']} | {row_cells(r['metrics'])} | {r['best_epoch']} "
              f"| {r['minutes_train']:.1f} |")
    (out / "thumbnail.json").write_text(json.dumps(
        {"train": str(train_path), "test": str(test_path), "results": results}, indent=1))
    print(f"read minutes (all sizes, one pass): {read_minutes:.1f}; wrote {out / 'thumbnail.json'}")


if __name__ == "__main__":
    main()
