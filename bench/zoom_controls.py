"""Zoom controls in one run (docs/method.md §8): learned zoom vs the fixed layout vs random zoom vs oracle
zoom (final patches on the lesions, ``magnet.inference.oracle``) vs mean RGB, same data.

Trains the demo recipe (``configs/demo_v1.yaml``, the ``tiny`` MagNet on 2 CPU cores) once per zoom mode on
one virtual data set, evaluates each best checkpoint on the test split (Table-1 AUROCs with bootstrap
intervals, hit rate, final patch size, pixels are the same budget in every mode), and scores the mean-RGB
baseline on the same split. Prints a Markdown table for docs/BENCHMARKS.md.

    .venv/bin/python bench/zoom_controls.py --n 200 --epochs 6 --out /tmp/zoom [--set model.max_scale=0.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from magnet.baselines.mean_rgb import run_mean_rgb
from magnet.config_io import load_config
from magnet.data.manifest import read_manifest
from magnet.evaluation.evaluate import evaluate
from magnet.metrics.auroc import table1
from magnet.synth.dataset import make_dataset, write_dataset
from magnet.training.loop import train
from magnet.training.recipe import TrainConfig

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")


def _cell(result: dict, key: str) -> str:  # type: ignore[type-arg]
    entry = result.get(key) or {}
    if entry.get("auroc") is None:
        return "–"
    lo, hi = entry["ci95"]
    return f"{entry['auroc']:.2f} ({lo:.2f}–{hi:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/zoom-controls")
    parser.add_argument("--modes", nargs="+", default=["learned", "fixed", "random", "oracle"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)
    manifest = write_dataset(make_dataset(args.n, args.seed), out / "data")
    rows = []
    for mode in args.modes:
        overrides = [f"data.manifest={manifest}", f"seed={args.seed}", f"optim.epochs={args.epochs}",
                     f"model.zoom={mode}", *args.overrides]
        cfg = load_config(TrainConfig, "configs/demo_v1.yaml", overrides)
        start = time.perf_counter()
        result = train(cfg, out / mode, resume=(out / mode / "last.ckpt").exists(), show_progress=False)
        minutes = (time.perf_counter() - start) / 60
        ev = evaluate(result.run_dir / "best.ckpt", manifest, out / mode / "eval", split="test",
                      show_progress=False).metrics
        loc = ev.get("localisation") or {}
        rows.append((mode, ev, loc, minutes))
        print(f"{mode}: done in {minutes:.1f} min", flush=True)
    test_rows, probs = run_mean_rgb(read_manifest(manifest, check_slides=False))
    rgb = table1([r.label for r in test_rows], list(probs), [r.lesion_class for r in test_rows])
    print(f"\n{args.n} slides, {args.epochs} epochs, seed {args.seed}, overrides {args.overrides or '-'}")
    print("| zoom | " + " | ".join(COLUMNS) + " | hit macro | hit micro | final side | train min |")
    print("|---" * (len(COLUMNS) + 5) + "|")
    for mode, ev, loc, minutes in rows:
        hits = [loc.get(f"hit_rate_{c}") for c in ("macro", "micro")]
        print(f"| {mode} | " + " | ".join(_cell(ev, c) for c in COLUMNS) + " | "
              + " | ".join("–" if h is None else f"{h:.2f}" for h in hits)
              + f" | {loc.get('mean_patch_side_fraction', float('nan')):.3f} | {minutes:.1f} |")
    print("| mean RGB | " + " | ".join(_cell(rgb, c) for c in COLUMNS) + " | – | – | – | – |")


if __name__ == "__main__":
    main()
