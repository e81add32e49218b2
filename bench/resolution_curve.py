"""Resolution curve: do virtual slides demand magnification? (lesion vs look-alike patches per µm/px)

A virtual-slide data set is only a test of *learning where to zoom* if its lesions cannot be told from
benign tissue at low power. This bench measures that directly, outside any MagNet: for each lesion class
(macro, micro, ITC) it cuts 112 × 112 patches centred on a random point inside a lesion (positive) and the
same number centred on a random point inside a benign structure (negative), at several output resolutions
(µm per output pixel), trains one small CNN per resolution on all classes together (binary: lesion vs not),
and reports the test AUROC per class with a 95 % bootstrap interval.

Negatives (``--negatives``):

- ``lookalikes``: inside a look-alike (``VirtualSlide.lookalikes``, slides of generator version 2: benign
  structures that match a lesion class at low power; docs/virtual-slides.md) whose ``mimics`` is that class.
  The default when the training slides have look-alikes.
- ``tissue``: a **stand-in** for slides without look-alikes (version 1): random points inside the tissue
  sections of negative slides. These are not matched to lesions in anything, so the curve they give is only
  a baseline: a lesion is told from ordinary parenchyma.

Targets (a data set that demands magnification): at ≥ 16 µm/px AUROC ≤ 0.75 macro and ≤ 0.65 micro / ITC;
at ≤ 1 µm/px AUROC ≥ 0.95 macro / micro and ≥ 0.85 ITC.

Data: ``--slides N`` slides of each of negative, macro, micro, ITC per split (URIs built here, lesion class
forced), slide seeds ``seed * 1,000,000 + index`` as in ``make_dataset``; the training set uses
``--train-seed``, the test set ``--test-seed`` (used for nothing but the final AUROC). Per class: positives =
``--patches-per-slide`` points on each slide of that class (inside its lesions of that class), negatives =
as many. The same centres are read at every resolution with ``VirtualSlide.render`` (exact area average).
Everything of one resolution is rendered, trained and scored before the next, so memory stays small.

    .venv/bin/python bench/resolution_curve.py --out /tmp/rc                      # version 1, tissue stand-in
    .venv/bin/python bench/resolution_curve.py --version 2 --out /tmp/rc2         # look-alike negatives
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.path import Path as PolygonPath
from torch import nn

from magnet.data.lesions import lesion_class_for_extent
from magnet.metrics.auroc import auroc_pos_neg, bootstrap_auroc_ci
from magnet.models.backbones import build_backbone
from magnet.synth.dataset import SEED_STRIDE
from magnet.synth.slide import VirtualSlide

CLASSES = ("macro", "micro", "itc")
SIZE = 112  # output patch side (px)
DEFAULT_MPP_LIST = (32.0, 16.0, 8.0, 4.0, 2.0, 1.0, 0.5)
BATCH = 32
LR = 1e-3
N_BOOTSTRAP = 1000
# Target bands: (µm/px condition, bound per class, "max" = AUROC must stay at or below, "min" = at or above).
COARSE_MPP, FINE_MPP = 16.0, 1.0
COARSE_MAX = {"macro": 0.75, "micro": 0.65, "itc": 0.65}
FINE_MIN = {"macro": 0.95, "micro": 0.95, "itc": 0.85}


# --- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Centre:
    """One patch: a level-0 centre on a slide, its label (1 lesion, 0 negative) and the class it is for."""

    slide: int  # index into the split's slide list
    x: float
    y: float
    label: int
    lesion_class: str
    source: str  # "lesion", "tissue" or the look-alike's kind


def slide_uri(seed: int, lesion: str, version: int, texture: str) -> str:
    """The URI of a default-size virtual slide; ``version`` is written only when it is not 1."""
    uri = f"synth:seed={seed},size=100000x100000,lesion={lesion}"
    if version != 1:
        uri += f",version={version}"
    if texture != "procedural":
        uri += f",texture={texture}"
    return uri


def make_split(data_seed: int, n_per_class: int, version: int, texture: str) -> list[VirtualSlide]:
    """``n_per_class`` slides of each of negative, macro, micro, ITC (slide seeds as in ``make_dataset``)."""
    slides = []
    for k, lesion in enumerate(("negative", *CLASSES)):
        for i in range(n_per_class):
            index = k * n_per_class + i
            slides.append(VirtualSlide(slide_uri(data_seed * SEED_STRIDE + index, lesion, version, texture)))
    return slides


def points_in_polygon(polygon: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn uniformly inside ``polygon`` ((K, 2) x, y), by rejection from its bounding box."""
    path = PolygonPath(polygon)
    lo, hi = polygon.min(0), polygon.max(0)
    found: list[np.ndarray] = []
    count = 0
    while count < n:
        candidates = rng.uniform(lo, hi, size=(max(16, 2 * (n - count)), 2))
        inside = candidates[path.contains_points(candidates)]
        found.append(inside)
        count += len(inside)
    return np.concatenate(found)[:n]


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon ((K, 2) x, y), by the shoelace formula."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def slide_lookalikes(slide: VirtualSlide) -> list:  # type: ignore[type-arg]
    """The slide's look-alikes (version 2 slides); ``[]`` for slides without them."""
    return list(getattr(slide, "lookalikes", None) or [])


def sample_centres(
    slides: list[VirtualSlide], per_slide: int, negatives: str, rng: np.random.Generator
) -> list[Centre]:
    """Balanced centres: per class, ``per_slide`` lesion points per slide of the class, as many negatives."""
    centres: list[Centre] = []
    for cls in CLASSES:
        # Positives: on each slide of this class, points inside its lesions of this class (the largest is).
        n_pos = 0
        for s, slide in enumerate(slides):
            if slide.lesion_class != cls:
                continue
            own = [p for p, e in zip(slide.lesions, slide.lesion_extents_um, strict=True)
                   if lesion_class_for_extent(e) == cls]
            for j in rng.integers(len(own), size=per_slide):
                (x, y), = points_in_polygon(own[j], 1, rng)
                centres.append(Centre(s, float(x), float(y), 1, cls, "lesion"))
                n_pos += 1
        # Negatives, as many as positives.
        if negatives == "tissue":
            # Stand-in: random tissue points of the negative slides, spread evenly over them.
            pool = [s for s, slide in enumerate(slides) if slide.lesion_class == "negative"]
            for i in range(n_pos):
                s = pool[i % len(pool)]
                sections = slides[s].layout.sections
                areas = np.array([polygon_area(sec.polygon()) for sec in sections])
                sec = sections[rng.choice(len(sections), p=areas / areas.sum())]
                (x, y), = points_in_polygon(sec.polygon(), 1, rng)
                centres.append(Centre(s, float(x), float(y), 0, cls, "tissue"))
        else:
            # Look-alikes mimicking this class, on any slide of the split, taken in turn (shuffled).
            pool_la = [(s, la) for s, slide in enumerate(slides) for la in slide_lookalikes(slide)
                       if la.mimics == cls]
            if not pool_la:
                raise SystemExit(f"no look-alikes mimic class {cls!r} in this split; use --negatives tissue")
            order = rng.permutation(len(pool_la))
            for i in range(n_pos):
                s, la = pool_la[order[i % len(order)]]
                (x, y), = points_in_polygon(np.asarray(la.polygon, float), 1, rng)
                centres.append(Centre(s, float(x), float(y), 0, cls, la.kind))
    return centres


def render_patches(slides: list[VirtualSlide], centres: list[Centre], mpp: float) -> torch.Tensor:
    """``uint8 (N, 3, SIZE, SIZE)``: each centre read at ``mpp`` µm per output pixel (exact area average)."""
    out = np.empty((len(centres), SIZE, SIZE, 3), np.uint8)
    for i, c in enumerate(centres):
        slide = slides[c.slide]
        d = mpp / slide.spec.mpp  # level-0 px per output px
        if d < 1.0:
            raise SystemExit(f"{mpp} µm/px is finer than the slides' {slide.spec.mpp} µm/px")
        out[i] = slide.render(c.x - SIZE / 2 * d, c.y - SIZE / 2 * d, d, SIZE, SIZE)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# --- model --------------------------------------------------------------------------------------------


def dihedral(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image under one of the 8 dihedral maps (random rotation by k · 90° and an optional flip)."""
    ks = torch.randint(0, 8, (len(batch),), generator=generator).tolist()
    return torch.stack([torch.rot90(img.flip(-1) if k >= 4 else img, k % 4, (-2, -1))
                        for img, k in zip(batch, ks, strict=True)])


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


def train_and_score(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, epochs: int, seed: int
) -> np.ndarray:
    """Small CNN + linear head trained for ``epochs`` epochs (Adam, batch 32, dihedral); test logits."""
    torch.manual_seed(seed)
    model = nn.Sequential(build_backbone("small"), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), LR)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(train_x), generator=g).split(BATCH):
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            logits = model(dihedral(to_float(train_x[batch]), g)).squeeze(1)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, train_y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(to_float(b)).squeeze(1) for b in test_x.split(256)]).numpy()


def class_auroc(
    scores: np.ndarray, centres: list[Centre], cls: str, rng: np.random.Generator
) -> dict[str, object]:
    """AUROC of the class's lesion patches against the negatives drawn for the class, with a 95 % interval."""
    pos = np.array([s for s, c in zip(scores, centres, strict=True) if c.lesion_class == cls and c.label])
    neg = np.array([s for s, c in zip(scores, centres, strict=True) if c.lesion_class == cls and not c.label])
    lo, hi = bootstrap_auroc_ci(pos, neg, n_bootstrap=N_BOOTSTRAP, rng=rng)
    # The same lesion patches against each kind of negative alone (which look-alike gives itself away).
    by_source = {}
    for source in sorted({c.source for c in centres if c.lesion_class == cls and not c.label}):
        neg_k = np.array([s for s, c in zip(scores, centres, strict=True)
                          if c.lesion_class == cls and not c.label and c.source == source])
        by_source[source] = auroc_pos_neg(pos, neg_k)
    return {"auroc": auroc_pos_neg(pos, neg), "ci95": [lo, hi], "n_pos": len(pos), "n_neg": len(neg),
            "by_negative_source": by_source}


# --- report -------------------------------------------------------------------------------------------


def target_verdict(mpp: float, cls: str, value: float) -> str:
    """"ok" / "MISS" against the target band of this µm/px, "" where no band applies."""
    if mpp >= COARSE_MPP:
        return "ok" if value <= COARSE_MAX[cls] else "MISS"
    if mpp <= FINE_MPP:
        return "ok" if value >= FINE_MIN[cls] else "MISS"
    return ""


def summarise(per_seed: list[dict[str, object]]) -> dict[str, object]:
    """Mean AUROC over training seeds, mean interval bounds, and the per-seed values."""
    values = [float(r["auroc"]) for r in per_seed]  # type: ignore[arg-type]
    return {
        "auroc": float(np.mean(values)),
        "ci95": [float(np.mean([r["ci95"][0] for r in per_seed])),  # type: ignore[index]
                 float(np.mean([r["ci95"][1] for r in per_seed]))],  # type: ignore[index]
        "per_seed": values,
        "by_negative_source": {k: float(np.mean([r["by_negative_source"][k] for r in per_seed]))  # type: ignore
                               for k in per_seed[0]["by_negative_source"]},  # type: ignore[attr-defined]
        "n_pos": per_seed[0]["n_pos"],
        "n_neg": per_seed[0]["n_neg"],
    }


def table(results: dict[str, dict[str, dict[str, object]]], n_seeds: int) -> str:
    head = "| µm/px | " + " | ".join(c.upper() if c == "itc" else c.capitalize() for c in CLASSES) + " |"
    lines = [head, "|---|" + "---|" * len(CLASSES)]
    for mpp, row in results.items():
        cells = []
        for cls in CLASSES:
            r = row[cls]
            cell = f"{r['auroc']:.2f} ({r['ci95'][0]:.2f}–{r['ci95'][1]:.2f})"  # type: ignore[index]
            if n_seeds > 1:
                cell += " [" + " / ".join(f"{v:.2f}" for v in r["per_seed"]) + "]"  # type: ignore[attr-defined]
            verdict = target_verdict(float(mpp), cls, float(r["auroc"]))  # type: ignore[arg-type]
            cells.append(cell + (f" {verdict}" if verdict else ""))
        lines.append(f"| {float(mpp):g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, object]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"macro": "tab:red", "micro": "tab:blue", "itc": "tab:green"}
    mpps = np.array([float(m) for m in results])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Target bands (grey): AUROC at most the ceilings at >= 16 µm/px, at least the floors at <= 1 µm/px.
    x_lo, x_hi = mpps.min() / 1.5, mpps.max() * 1.5
    ceilings = {COARSE_MAX["macro"]: "macro", COARSE_MAX["micro"]: "micro, ITC"}
    floors = {FINE_MIN["itc"]: "ITC", FINE_MIN["macro"]: "macro, micro"}
    for bound, names in ceilings.items() if mpps.max() >= COARSE_MPP else ():
        span = [max(COARSE_MPP, x_lo), x_hi]
        ax.fill_between(span, 0.4, bound, color="grey", alpha=0.12, lw=0)
        ax.plot(span, [bound] * 2, color="k", ls=":", lw=1)
        ax.text(x_hi / 1.05, bound - 0.005, f"{names} ≤ {bound:g}", fontsize=7, va="top", ha="left")
    for bound, names in floors.items() if mpps.min() <= FINE_MPP else ():
        span = [x_lo, min(FINE_MPP, x_hi)]
        ax.fill_between(span, bound, 1.02, color="grey", alpha=0.12, lw=0)
        ax.plot(span, [bound] * 2, color="k", ls=":", lw=1)
        ax.text(span[1] / 1.05, bound - 0.005, f"{names} ≥ {bound:g}", fontsize=7, va="top", ha="left")
    for cls in CLASSES:
        mean = np.array([results[m][cls]["auroc"] for m in results], float)
        lo = np.array([results[m][cls]["ci95"][0] for m in results], float)  # type: ignore[index]
        hi = np.array([results[m][cls]["ci95"][1] for m in results], float)  # type: ignore[index]
        label = cls.upper() if cls == "itc" else cls
        ax.errorbar(mpps, mean, yerr=[mean - lo, hi - mean], color=colours[cls], marker="o", ms=4,
                    capsize=3, label=label)
        for k in range(len(results[next(iter(results))][cls]["per_seed"])):  # type: ignore[arg-type]
            seed_values = [results[m][cls]["per_seed"][k] for m in results]  # type: ignore[index]
            ax.plot(mpps, seed_values, color=colours[cls], lw=0, marker=".", ms=3, alpha=0.5)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(mpps, [f"{m:g}" for m in mpps])
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(0.4, 1.02)
    ax.invert_xaxis()  # low power on the left, high power on the right
    ax.set_xlabel("µm per output pixel (112 px patch)")
    ax.set_ylabel("test AUROC, lesion vs negative")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower center", fontsize=8, title="grey: target bands", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict[str, object]:
    model = platform.processor() or ""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_avg": list(os.getloadavg())}


# --- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, default=1, help="virtual-slide generator version")
    parser.add_argument("--texture", choices=("procedural", "camelyon16"), default="procedural")
    parser.add_argument("--negatives", choices=("auto", "lookalikes", "tissue"), default="auto",
                        help="auto: lookalikes when the training slides have any, else tissue (stand-in)")
    parser.add_argument("--slides", type=int, default=16,
                        help="slides per class (negative/macro/micro/ITC) per split")
    parser.add_argument("--patches-per-slide", type=int, default=8)
    parser.add_argument("--mpp-list", type=float, nargs="+", default=list(DEFAULT_MPP_LIST))
    parser.add_argument("--epochs", type=int, default=8, help="training epochs, the same at every µm/px")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    parser.add_argument("--train-seed", type=int, default=21, help="training data-set seed")
    parser.add_argument("--test-seed", type=int, default=22, help="test data-set seed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared 2-core machine; 2 on an idle one)")
    parser.add_argument("--out", type=Path, default=Path("runs/resolution_curve"))
    args = parser.parse_args()
    if args.train_seed == args.test_seed:
        parser.error("--train-seed and --test-seed must differ")
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    train_slides = make_split(args.train_seed, args.slides, args.version, args.texture)
    test_slides = make_split(args.test_seed, args.slides, args.version, args.texture)
    negatives = args.negatives
    if negatives == "auto":
        negatives = "lookalikes" if any(slide_lookalikes(s) for s in train_slides) else "tissue"
    per_slide = args.patches_per_slide
    train_c = sample_centres(train_slides, per_slide, negatives, np.random.default_rng(args.train_seed))
    test_c = sample_centres(test_slides, per_slide, negatives, np.random.default_rng(args.test_seed))
    counts = {split: {cls: sum(c.lesion_class == cls for c in cs) // 2 for cls in CLASSES}
              for split, cs in (("train", train_c), ("test", test_c))}
    # What the negatives are, per class: {class: {source: count}} (look-alike kinds, or "tissue").
    sources = {split: {cls: dict(Counter(c.source for c in cs if c.lesion_class == cls and not c.label))
                       for cls in CLASSES} for split, cs in (("train", train_c), ("test", test_c))}
    neg_name = "look-alikes mimicking the class" if negatives == "lookalikes" else \
        "STAND-IN: random tissue points of negative slides (no look-alikes on these slides)"
    print(f"version {args.version}, {args.texture} textures, {4 * args.slides} slides per split "
          f"({args.slides} each of negative/macro/micro/ITC), data seeds train {args.train_seed} / "
          f"test {args.test_seed}")
    print(f"negatives: {neg_name}")
    print("patches per class (positives = negatives): "
          + ", ".join(f"{s} " + "/".join(str(counts[s][c]) for c in CLASSES) for s in counts)
          + " (macro/micro/ITC)")
    print(f"negatives per class (test): {sources['test']}")
    print(f"{SIZE} px patches at {', '.join(f'{m:g}' for m in args.mpp_list)} µm/px; small CNN + linear, "
          f"{args.epochs} epochs, batch {BATCH}, Adam {LR:g}, dihedral; training seeds {args.seeds}; "
          f"{args.threads} torch thread(s)", flush=True)

    train_y = torch.tensor([float(c.label) for c in train_c])
    results: dict[str, dict[str, dict[str, object]]] = {}
    timing: dict[str, dict[str, float]] = {}
    for mpp in args.mpp_list:
        t0 = time.perf_counter()
        train_x = render_patches(train_slides, train_c, mpp)
        test_x = render_patches(test_slides, test_c, mpp)
        t1 = time.perf_counter()
        per_class: dict[str, list[dict[str, object]]] = {cls: [] for cls in CLASSES}
        for seed in args.seeds:
            scores = train_and_score(train_x, train_y, test_x, args.epochs, seed)
            for cls in CLASSES:
                rng = np.random.default_rng([seed, CLASSES.index(cls)])
                per_class[cls].append(class_auroc(scores, test_c, cls, rng))
        t2 = time.perf_counter()
        results[f"{mpp:g}"] = {cls: summarise(per_class[cls]) for cls in CLASSES}
        timing[f"{mpp:g}"] = {"render_s": t1 - t0, "train_s": t2 - t1}
        row = ", ".join(f"{cls} {results[f'{mpp:g}'][cls]['auroc']:.2f}" for cls in CLASSES)
        print(f"  {mpp:g} µm/px: {row}  (render {t1 - t0:.0f} s, train {t2 - t1:.0f} s)", flush=True)

    wall = time.perf_counter() - start
    text = table(results, len(args.seeds))
    print()
    print(text)
    print(f"\nok / MISS: target bands (≥ {COARSE_MPP:g} µm/px: AUROC ≤ {COARSE_MAX['macro']} macro, "
          f"≤ {COARSE_MAX['micro']} micro/ITC; ≤ {FINE_MPP:g} µm/px: ≥ {FINE_MIN['macro']} macro/micro, "
          f"≥ {FINE_MIN['itc']} ITC)")
    if negatives == "lookalikes":
        print("\nAUROC of each class's lesions against each kind of look-alike alone (mean over seeds):")
        for mpp, row in results.items():
            parts = [f"{cls} " + ", ".join(f"{k} {v:.2f}" for k, v in row[cls]["by_negative_source"].items())
                     for cls in CLASSES]  # type: ignore[attr-defined]
            print(f"  {mpp} µm/px: " + "; ".join(parts))
    print(f"wall time {wall / 60:.1f} min")
    title = (f"v{args.version} {args.texture}, negatives: "
             + ("look-alikes" if negatives == "lookalikes" else "random tissue (stand-in)")
             + f"; test {counts['test']['macro']} patches/class each side, {len(args.seeds)} seed(s)")
    plot(results, title, args.out / "resolution_curve.png")
    report = {
        "command": vars(args) | {"out": str(args.out)},
        "negatives": negatives,
        "counts_per_class": counts,
        "negative_sources": sources,
        "size_px": SIZE,
        "epochs": args.epochs,
        "batch": BATCH,
        "targets": {"coarse_mpp": COARSE_MPP, "coarse_max": COARSE_MAX, "fine_mpp": FINE_MPP,
                    "fine_min": FINE_MIN},
        "results": results,
        "timing": timing,
        "wall_s": wall,
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "table": text,
    }
    (args.out / "resolution_curve.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'resolution_curve.json'} and {args.out / 'resolution_curve.png'}")


if __name__ == "__main__":
    main()
