"""Benchmark of virtual slides: render speed per level, whole-slide views, mean-RGB baseline.

Virtual slides are described in docs/virtual-slides.md.

Prints one table. Targets: a 448 x 448 region at any level <= 15 ms median on one core; whole-slide 56 x 56
and 112 x 112 views <= 10 ms; a logistic regression on the mean RGB of the grey-filtered thumbnail at
AUROC <= 0.65 on 200 slides (the paper's mean-RGB baseline scored 0.58 on Camelyon).

    .venv/bin/python bench/bench_synth.py [--slides 200] [--reads 40] [--texture procedural|camelyon16]
        [--version 1 2]

``--version`` takes one or more generator versions; each is measured in the same run (the machine is
shared, so only numbers from one run compare).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, as the targets say

import numpy as np  # noqa: E402

from magnet.slides.pixels import grey_mask  # noqa: E402
from magnet.synth import VirtualSlide  # noqa: E402
from magnet.synth.dataset import make_dataset  # noqa: E402
from magnet.synth.uri import VERSIONS  # noqa: E402

THUMBNAIL = 256


def _median_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_regions(texture: str, reads: int, version: int = 1) -> list[tuple[str, float]]:
    extra = "" if texture == "procedural" else f",texture={texture}"
    if version != 1:
        extra += f",version={version}"
    slide = VirtualSlide(f"synth:seed=3,lesion=macro{extra}")
    start = time.perf_counter()
    slide.read_region((0, 0), 0, (8, 8))  # builds the texture banks once per process
    texture = f"v{version} {texture}"
    rows = [(f"{texture}: texture banks, once per process", (time.perf_counter() - start) * 1e3)]
    rng = np.random.default_rng(0)
    section = slide.layout.sections[0]
    lesion = slide.lesions[0].mean(0)
    for level, d in enumerate(slide.level_downsamples):
        # Half the reads around the lesion (two textures), half anywhere in the main tissue section.
        centres = [lesion + rng.normal(0, 2000, 2) for _ in range(reads // 2)]
        centres += [
            np.array([section.cx, section.cy]) + rng.normal(0, section.r_min / 2, 2)
            for _ in range(reads // 2)
        ]
        it = iter(centres * 2)

        def read(level: int = level, d: float = d, it: Iterator[np.ndarray] = it) -> None:
            cx, cy = next(it)
            slide.read_region((int(cx - 224 * d), int(cy - 224 * d)), level, (448, 448))

        rows.append((f"{texture}: 448x448 region, level {level} (downsample {d:g})", _median_ms(read, reads)))
    w, h = slide.dimensions
    for side in (56, 112):
        rows.append(
            (
                f"{texture}: whole slide {side}x{side}, direct render",
                _median_ms(lambda side=side: slide.render(0, 0, max(w, h) / side, side, side), 20),
            )
        )

        def via_level(side: int = side) -> None:
            from PIL import Image

            level = slide.get_best_level_for_downsample(max(w, h) / side)
            region = slide.read_region((0, 0), level, slide.level_dimensions[level])
            Image.fromarray(region).resize((side, side), Image.Resampling.BOX)

        rows.append((f"{texture}: whole slide {side}x{side}, best level + resize", _median_ms(via_level, 10)))
    return rows


def mean_rgb_auroc(n: int, texture: str, version: int = 1) -> tuple[float, float, str]:
    """Cross-validated AUROC of a logistic regression on the mean RGB of the grey-filtered thumbnail."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    features, labels, classes = [], [], []
    for item in make_dataset(n, seed=1, texture=texture, version=version):
        slide = VirtualSlide(item.uri)
        w, h = slide.dimensions
        rgb = slide.render(0, 0, max(w, h) / THUMBNAIL, THUMBNAIL, THUMBNAIL)
        tissue = ~grey_mask(rgb)  # the grey filter's test (paper §4.2, the reader's rule)
        image = rgb.astype(float)
        features.append(image[tissue].mean(0) if tissue.any() else image.reshape(-1, 3).mean(0))
        labels.append(item.label)
        classes.append(item.lesion_class)
    x, y = np.asarray(features), np.asarray(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    # Optimistic bound: fitted and scored on the same slides (no held-out data).
    in_sample = roc_auc_score(y, model.fit(x, y).predict_proba(x)[:, 1])
    per_class = [f"in-sample (fit on all) {in_sample:.3f}"]
    for name in ("macro", "micro", "itc"):
        keep = np.isin(np.asarray(classes), ["negative", name])
        per_class.append(f"negative vs {name} {roc_auc_score(y[keep], scores[keep]):.3f}")
    return float(roc_auc_score(y, scores)), time.perf_counter() - start, ", ".join(per_class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=200)
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--texture", default="procedural", choices=("procedural", "camelyon16"))
    parser.add_argument("--version", type=int, nargs="+", default=[1], choices=VERSIONS,
                        help="generator versions, measured in the same run (default 1)")
    args = parser.parse_args()
    rows = [row for version in args.version for row in bench_regions(args.texture, args.reads, version)]
    width = max(len(name) for name, _ in rows) + 2
    print(f"{'measurement':<{width}}{'median ms':>10}")
    for name, ms in rows:
        print(f"{name:<{width}}{ms:>10.2f}")
    if args.slides <= 0:
        return
    for version in args.version:
        auroc, seconds, per_class = mean_rgb_auroc(args.slides, args.texture, version)
        print(
            f"\nmean-RGB logistic regression, {args.slides} slides (v{version} {args.texture}), "
            f"5-fold CV AUROC: {auroc:.3f}"
        )
        print(f"  {per_class}  ({seconds:.1f} s for thumbnails and fit)")


if __name__ == "__main__":
    main()
