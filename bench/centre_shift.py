"""Stain and scanner shift: a model trained at some centres, scored at its own and at a held-out one.

Data (virtual slides, ``magnet.synth.centres``): a training set spread over ``--train-centres`` (its train
and validation splits), and two test sets with the same layouts, labels and seeds (``make_dataset(M, seed)``,
the first ``--test-counts`` slides of each class), one rendered at the first training centre (in-centre),
one at ``--held-out`` (a centre no training slide comes from). Levers, each trained through the same
``train -> evaluate`` path as bench/zoom_table.py with the ``--recipe`` (demo by default):

- ``none``: the recipe as it is;
- ``augment``: plus stain and colour augmentation (``data.colour.*``, docs/method.md §10; ``--augment``
  gives the keys);
- ``none + reinhard at test``: the ``none`` model evaluated with ``--stain-norm reinhard`` (no training);
- ``reinhard``: trained and evaluated with ``data.stain_norm=reinhard`` (``--levers`` to include it).

Prints one Markdown table: per lever, in-centre vs held-out Macro & Micro and All AUROC (95 % bootstrap
intervals), hit rates (macro, micro), and the training speed (median slides/s over the epochs: the
levers' cost). Runs that finished are reused (delete ``--out`` to start over).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/centre_shift.py --out /tmp/centre-shift \\
        --n-train 160 --size 60000x60000 --epochs 4
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from magnet.config_io import load_config
from magnet.evaluation.evaluate import evaluate
from magnet.synth.dataset import DEFAULT_VERSION, make_dataset, take_per_class, write_dataset
from magnet.synth.uri import parse_size
from magnet.training.loop import train
from magnet.training.recipe import TrainConfig

# Stain and colour augmentation of the "augment" lever: HED jitter of the strength Tellez et al. 2019 call
# strong, with brightness/contrast/saturation jitter; no blur or JPEG (the held-out centre is not blurry).
AUGMENT = ["data.colour.hed_scale=0.2", "data.colour.hed_shift=0.05", "data.colour.brightness=0.1",
           "data.colour.contrast=0.1", "data.colour.saturation=0.15"]
LEVERS = {"none": [], "augment": AUGMENT, "reinhard": ["data.stain_norm=reinhard"]}


def make_sets(args: argparse.Namespace) -> dict[str, Path]:
    out, size = Path(args.out), parse_size(args.size)
    assert size is not None
    common: dict[str, Any] = {"size": size, "texture": args.texture, "version": args.version}
    manifests = {"train": out / "data-train" / "manifest.csv"}
    if not manifests["train"].exists():
        write_dataset(make_dataset(args.n_train, args.data_seed, centres=tuple(args.train_centres), **common),
                      out / "data-train")
    counts = dict(zip(("negative", "macro", "micro", "itc"), args.test_counts, strict=True))
    for name, centre in (("in-centre", args.train_centres[0]), ("held-out", args.held_out)):
        manifests[name] = out / f"data-{name}" / "manifest.csv"
        if not manifests[name].exists():
            pool = make_dataset(args.n_test_pool, args.test_seed, centres=(centre,), **common)
            write_dataset(take_per_class(pool, counts), out / f"data-{name}")
    return manifests


def run(lever: str, seed: int, sets: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.out) / f"{lever}-seed{seed}"
    done = folder / "summary.json"
    if done.exists():
        return json.loads(done.read_text())  # type: ignore[no-any-return]
    overrides = [f"data.manifest={sets['train']}", f"seed={seed}", f"optim.epochs={args.epochs}",
                 f"optim.head_warmup_steps={args.warmup_steps}", *LEVERS[lever], *args.overrides]
    cfg = load_config(TrainConfig, args.recipe, overrides)
    start = time.perf_counter()
    result = train(cfg, folder, resume=(folder / "last.ckpt").exists(), show_progress=False)
    minutes = (time.perf_counter() - start) / 60
    summary: dict[str, Any] = {"minutes": minutes, "eval": {}}
    norms = ["none", "reinhard"] if lever == "none" and args.reinhard_at_test else ["none"]
    for norm in norms:
        for name in ("in-centre", "held-out"):
            key = name if norm == "none" else f"{name}+reinhard"
            metrics = evaluate(result.run_dir / "best.ckpt", sets[name], folder / f"eval-{key}",
                               show_progress=False, stain_norm=None if norm == "none" else norm).metrics
            summary["eval"][key] = metrics
    done.write_text(json.dumps(summary))
    print(f"{lever} seed {seed}: {minutes:.1f} min", flush=True)
    return summary


def median_speed(folder: Path) -> float | None:
    """Median training slides/s over the epochs (``metrics.csv``'s ``train_slides_per_s``): on shared cores
    single epochs swing by a factor of 5, the median less."""
    table = folder / "metrics.csv"
    if not table.exists():
        return None
    rows = csv.DictReader(table.open())
    speeds = [float(r["train_slides_per_s"]) for r in rows if r.get("train_slides_per_s")]
    return float(np.median(speeds)) if speeds else None


def cell(metrics: dict[str, Any], column: str) -> str:
    entry = metrics.get(column) or {}
    if entry.get("auroc") is None:
        return "–"
    ci = entry.get("ci95")
    return f"{entry['auroc']:.2f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def hit(metrics: dict[str, Any], cls: str) -> str:
    value = (metrics.get("localisation") or {}).get(f"hit_rate_{cls}")
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/centre-shift")
    parser.add_argument("--recipe", default="configs/demo_v1.yaml")
    parser.add_argument("--texture", default="camelyon16", help="procedural or camelyon16 (default)")
    parser.add_argument("--size", default="100000x100000", help="level-0 size of every slide, WxH")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION,
                        help=f"virtual-slide generator version (default {DEFAULT_VERSION})")
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--data-seed", type=int, default=1)
    parser.add_argument("--test-seed", type=int, default=2)
    parser.add_argument("--n-test-pool", type=int, default=600, help="slides drawn for the test sets")
    parser.add_argument("--test-counts", type=int, nargs=4, default=[60, 20, 20, 20],
                        metavar=("NEG", "MACRO", "MICRO", "ITC"))
    parser.add_argument("--train-centres", nargs="+", default=["reference"])
    parser.add_argument("--held-out", default="purple")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--warmup-steps", type=int, default=800, help="optim.head_warmup_steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--levers", nargs="+", default=["none", "augment"], choices=list(LEVERS))
    parser.add_argument("--no-reinhard-at-test", dest="reinhard_at_test", action="store_false",
                        help="skip evaluating the 'none' model with Reinhard normalisation at test time")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.held_out in args.train_centres:
        parser.error(f"--held-out {args.held_out} is a training centre")
    sets = make_sets(args)
    results = {lever: [run(lever, seed, sets, args) for seed in args.seeds] for lever in args.levers}

    print(f"\ntrain {sets['train']} (centres {' '.join(args.train_centres)}); in-centre "
          f"{args.train_centres[0]}, held-out {args.held_out}; version {args.version}; "
          f"test counts {args.test_counts}; seeds {args.seeds}, {args.epochs} epochs; "
          f"overrides {' '.join(args.overrides) or '-'}")
    print("| lever | seed | test | Macro & Micro | All | Macro | hit macro | hit micro | train slides/s |")
    print("|---" * 9 + "|")
    for lever, runs in results.items():
        for seed, summary in zip(args.seeds, runs, strict=True):
            speed = median_speed(Path(args.out) / f"{lever}-seed{seed}")
            for key, metrics in summary["eval"].items():
                name = lever if "+reinhard" not in key else f"{lever}, Reinhard at test"
                test = key.replace("+reinhard", "")
                print(f"| {name} | {seed} | {test} | {cell(metrics, 'macro_micro')} | {cell(metrics, 'all')} "
                      f"| {cell(metrics, 'macro')} | {hit(metrics, 'macro')} | {hit(metrics, 'micro')} "
                      f"| {'–' if speed is None else f'{speed:.2f}'} |")


if __name__ == "__main__":
    main()
