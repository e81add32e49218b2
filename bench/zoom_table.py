"""The zoom table: learned zoom vs its controls, trained on one virtual data set, scored on another.

The controls are those of docs/method.md §8.

For every zoom mode (learned, fixed, random, oracle) and seed: ``magnet train`` with the demo recipe plus
the given overrides on ``--data`` (its train and validation splits), then ``magnet evaluate`` of the best
checkpoint on every row of ``--test`` (a separate virtual test set, large enough for per-class AUROCs).
The mean-RGB baseline is fitted on the same training split; with ``--thumbnail 224 1024`` the thumbnail
baseline (a small CNN on the whole-slide view at 224² / 1024², ``magnet.baselines.thumbnail``) is trained per
seed on the same train and validation splits and scored on the same test set. Prints a Markdown table:
AUROC per Table-1 column (one seed: with its 95 % bootstrap interval; several: mean +- standard error over
seeds), hit rate per class (coarse, and at cellular resolution: a final patch read at <= 2 um/px on the
lesion), mean final patch side and its um per output pixel, output pixels read per slide, training minutes.
Runs that finished are reused (delete ``--out`` to start over).

    .venv/bin/python bench/zoom_table.py --out /tmp/zoom-table --seeds 1 2 3 --epochs 6

Without ``--data`` / ``--test`` it writes the two virtual sets the table in docs/BENCHMARKS.md used: 600
training slides (``make_dataset(600, 1)``, its train and validation splits) and a test set of the first
300 negative and 70 macro, micro and ITC slides of ``make_dataset(1200, 2)`` (disjoint seeds), with
``--texture`` procedural (default) or camelyon16 (real tumour and normal patches shipped in
magnet/synth/camelyon16).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from magnet.baselines.mean_rgb import run_mean_rgb
from magnet.baselines.thumbnail import ThumbnailConfig, read_views, run_thumbnail, views_by_slide
from magnet.config_io import load_config
from magnet.data.manifest import read_manifest
from magnet.evaluation.evaluate import evaluate
from magnet.metrics.auroc import table1
from magnet.models.model_config import MagNetConfig
from magnet.synth.dataset import DEFAULT_VERSION, make_dataset, take_per_class, write_dataset
from magnet.training.checkpoints import load_checkpoint
from magnet.training.loop import train
from magnet.training.readout_refit import TRAINED_CHECKPOINT
from magnet.training.recipe import TrainConfig

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")


def pixels_per_slide(model: MagNetConfig) -> int:
    """Output pixels the model reads per slide: the root's I and I', then each parent's I' per layer.

    Oracle, and ``model.final_read=direct`` without ``model.recentre``: the last layer reads its final patches
    directly (N_L x final_size^2) instead of the parents' I'. ``model.recentre`` (every other mode): each
    final patch is read once more, moved (N_L x final_size^2).
    """
    total = model.view_size**2 + model.read_size**2
    final_reads = model.patches_at(model.num_layers) * model.final_size**2
    reads_boxes_only = model.zoom == "oracle" or (model.final_read == "direct" and not model.recentre)
    for layer in range(1, model.num_layers):
        size = model.final_read_size if layer + 1 == model.num_layers else model.read_size
        if reads_boxes_only and layer + 1 == model.num_layers:
            total += final_reads
        else:
            total += model.patches_at(layer) * size**2
    if model.recentre and model.zoom != "oracle":
        total += final_reads
    return total


def make_sets(out: Path, test_counts: dict[str, int], texture: str, version: int) -> tuple[Path, Path]:
    """The default training set (600 slides, seed 1) and class-enriched test set (seed 2)."""
    train_manifest = write_dataset(make_dataset(600, 1, texture=texture, version=version), out / "data-train")
    test = take_per_class(make_dataset(1200, 2, texture=texture, version=version), test_counts)
    return train_manifest, write_dataset(test, out / "data-test")


def run(mode: str, seed: int, args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    folder = Path(args.out) / f"{mode}-seed{seed}"
    done = folder / "eval" / "summary.json"
    if done.exists():
        return json.loads(done.read_text())  # type: ignore[no-any-return]
    overrides = [f"data.manifest={args.data}", f"seed={seed}", f"optim.epochs={args.epochs}",
                 f"model.zoom={mode}", *args.overrides]
    cfg = load_config(TrainConfig, args.recipe, overrides)
    start = time.perf_counter()
    result = train(cfg, folder, resume=(folder / "last.ckpt").exists(), show_progress=False)
    minutes = (time.perf_counter() - start) / 60
    metrics = evaluate(result.run_dir / "best.ckpt", args.test, folder / "eval", show_progress=False).metrics
    summary = {"metrics": metrics, "minutes": minutes, "pixels": pixels_per_slide(cfg.model)}
    trained = result.run_dir / TRAINED_CHECKPOINT
    if trained.exists():  # a readout refit ran: score the checkpoint before it too, on the same test set
        kept_trained = load_checkpoint(result.run_dir / "best.ckpt")["readout_refit"]["best_epoch"] == 0
        summary["metrics_trained"] = metrics if kept_trained else evaluate(  # pass 0: the same weights
            trained, args.test, folder / "eval-trained", show_progress=False).metrics
    done.write_text(json.dumps(summary))
    print(f"{mode} seed {seed}: {minutes:.1f} min, AUROC all {metrics['all']['auroc']:.3f}", flush=True)
    return summary


def run_thumbnails(args: argparse.Namespace) -> dict[int, list[dict]]:  # type: ignore[type-arg]
    """Thumbnail rows: per size and seed, trained on ``--data``, scored on every row of ``--test``."""
    todo = {(size, seed): Path(args.out) / f"thumbnail{size}-seed{seed}.json"
            for size in args.thumbnail for seed in args.seeds}
    missing = sorted({size for (size, _), path in todo.items() if not path.exists()})
    data_rows = read_manifest(args.data, check_slides=False).rows
    test_rows = read_manifest(args.test, check_slides=False).rows
    if missing:  # every missing size read in one pass over the slides (one opening per slide)
        specs = [r.slide for r in data_rows if r.split in ("train", "validation")]
        specs += [r.slide for r in test_rows]
        views = read_views(list(dict.fromkeys(specs)), missing)
        for spec, reason in views[missing[0]].skipped:
            print(f"thumbnail: {spec} left out ({reason})", flush=True)
    results: dict[int, list[dict]] = {size: [] for size in args.thumbnail}  # type: ignore[type-arg]
    for (size, seed), path in todo.items():
        if not path.exists():
            cfg = ThumbnailConfig(size=size, seed=seed, epochs=args.thumbnail_epochs)
            result = run_thumbnail(data_rows, cfg, test=test_rows, views=views_by_slide(views[size]))
            path.write_text(json.dumps({**result.summary(), "minutes": result.minutes_train,
                                        "pixels": size * size}))
            print(f"thumbnail {size} seed {seed}: {result.minutes_train:.1f} min, "
                  f"AUROC all {result.metrics['all']['auroc']:.3f}", flush=True)
        results[size].append(json.loads(path.read_text()))
    return results


def auroc_cell(runs: list[dict], column: str) -> str:  # type: ignore[type-arg]
    values = [r["metrics"].get(column, {}).get("auroc") for r in runs]
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        lo, hi = runs[0]["metrics"][column]["ci95"]
        return f"{values[0]:.2f} ({lo:.2f}–{hi:.2f})"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1) / math.sqrt(len(values)):.2f}"


def mean_of(runs: list[dict], key: str, digits: int = 2) -> str:  # type: ignore[type-arg]
    values = [(r["metrics"].get("localisation") or {}).get(key) for r in runs]
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.{digits}f}" if values else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="training manifest (train + validation splits); default: made")
    parser.add_argument("--test", help="test manifest (every row is scored); default: made")
    parser.add_argument("--recipe", default="configs/demo_v1.yaml")
    parser.add_argument("--texture", default="procedural", help="made data sets: procedural or camelyon16")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION,
                        help=f"made data sets: virtual-slide generator version (default {DEFAULT_VERSION})")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--modes", nargs="*", default=["learned", "fixed", "random", "oracle"],
                        help="zoom modes to train; none (a bare --modes): only the baselines")
    parser.add_argument("--out", default="/tmp/zoom-table")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--thumbnail", type=int, nargs="*", default=[],
                        help="add thumbnail-baseline rows at these view sizes, e.g. 224 1024")
    parser.add_argument("--thumbnail-epochs", type=int, default=ThumbnailConfig.epochs)
    args = parser.parse_args()
    if not args.data or not args.test:
        made = make_sets(Path(args.out), {"negative": 300, "macro": 70, "micro": 70, "itc": 70}, args.texture,
                         args.version)
        args.data, args.test = args.data or str(made[0]), args.test or str(made[1])
    results = {mode: [run(mode, seed, args) for seed in args.seeds] for mode in args.modes}
    thumbnails = run_thumbnails(args) if args.thumbnail else {}

    train_rows = [r for r in read_manifest(args.data, check_slides=False).rows if r.split == "train"]
    test_rows = [r for r in read_manifest(args.test, check_slides=False).rows]
    scored, probs = run_mean_rgb(train_rows + [r for r in test_rows if r.split == "test"])
    rgb = table1([r.label for r in scored], list(probs), [r.lesion_class for r in scored])

    counts = {c: sum(r.lesion_class == c for r in test_rows) for c in ("negative", "macro", "micro", "itc")}
    print(f"\ntrain {args.data}, test {args.test} {counts}; seeds {args.seeds}, {args.epochs} epochs; "
          f"overrides {' '.join(args.overrides) or '-'}")
    print("| zoom | Macro | Micro | ITC | Macro & Micro | All | hit macro | hit micro | hit ≤ 2 µm/px macro "
          "/ micro / ITC | final side | µm/px | px read / slide | train min |")
    print("|---" * 14 + "|")
    for mode, runs in results.items():
        fine = " / ".join(mean_of(runs, f"hit_rate_fine_{c}") for c in ("macro", "micro", "itc"))
        print(f"| {mode} | " + " | ".join(auroc_cell(runs, c) for c in COLUMNS)
              + f" | {mean_of(runs, 'hit_rate_macro')} | {mean_of(runs, 'hit_rate_micro')} | {fine} "
              + f"| {mean_of(runs, 'mean_patch_side_fraction')} | {mean_of(runs, 'final_um_per_px', 1)} "
              + f"| {runs[0]['pixels']:,} | {np.mean([r['minutes'] for r in runs]):.1f} |")
    rgb_cells = " | ".join(
        "–" if (rgb.get(c) or {}).get("auroc") is None
        else f"{rgb[c]['auroc']:.2f} ({rgb[c]['ci95'][0]:.2f}–{rgb[c]['ci95'][1]:.2f})" for c in COLUMNS)
    print(f"| mean RGB | {rgb_cells} | – | – | – | – | – | thumbnail | – |")
    for size, runs in thumbnails.items():
        print(f"| thumbnail {size}² | " + " | ".join(auroc_cell(runs, c) for c in COLUMNS)
              + f" | – | – | – | – | – | {size * size:,} | {np.mean([r['minutes'] for r in runs]):.1f} |")


if __name__ == "__main__":
    main()
