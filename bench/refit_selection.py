"""Which pass of the readout refit holds on the test set? A probe of the refit's selection rule.

The refit (``magnet.training.readout_refit``) keeps the pass with the best validation AUROC; this probe
was written when pass 0 (the readout as trained) was among the candidates, which on 40 validation slides
a flat readout could win by chance, the test then disagreeing (now only with ``refit.trained_competes``).
From the cached final-patch features of ``bench/patch_targets.py`` (its ``--out`` folder) this bench
starts from each run's *trained* readout, refits it with the product's ``refit_readout`` (Adam 1e-4,
weight decay 1e-4, one slide per step) on four fifths of the training slides for ``--passes`` passes,
watching every pass (``after_pass``), and reports the test Macro & Micro AUROC of the pass each rule
would keep, choosing on the other fifth: ``auroc`` (the pass the product's refit keeps), ``bce`` (lowest
held-out cross-entropy), ``last`` (no choice), beside ``pass 0``; and ``folds K`` (``--folds``, the
product's ``refit.folds``): the mean of K refits over all the training slides, each choosing its pass on
its own fold. Several held-out splits (``--splits``; for the folds, the seed of their dealing) show how
much the choice itself varies.

    OMP_NUM_THREADS=1 .venv/bin/python bench/refit_selection.py \\
        --run learned=/tmp/targets:RUN/best-trained.ckpt --run other=/tmp/targets:RUN2/best.ckpt

``NAME=FOLDER:CKPT``: NAME is the checkpoint's name in the patch_targets cache FOLDER (``NAME-train.pt``,
``NAME-test.pt``); CKPT gives the trained readout (``best-trained.ckpt`` where a refit replaced it).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from patch_targets import cached_features, load_with_zoom

from magnet.metrics.auroc import auroc, table1
from magnet.training.readout_refit import CachedFeatures, refit_readout, refit_readout_folds

RULES = ("pass 0", "auroc", "bce", "last")
TestSet = tuple[CachedFeatures, list[str]]  # the test slides' cached features and their classes


def test_macro_micro(readout, test: TestSet) -> float:  # type: ignore[no-untyped-def]
    """The test Macro & Micro AUROC of ``readout`` on the cached test features."""
    features, classes = test
    with torch.no_grad():
        logits = readout.read_out(features.features).logit
    return float(table1(features.labels.tolist(), logits.tolist(), classes)["macro_micro"]["auroc"])


def probe(classifier, train: list[dict], test: TestSet,  # type: ignore[no-untyped-def]
          passes: int, seed: int) -> dict[str, tuple]:
    """Rule -> (pass kept, test Macro & Micro AUROC) for one held-out split of the training slides: the
    product's refit, watched after every pass."""
    held = set(np.random.default_rng(seed).permutation(len(train))[: len(train) // 5].tolist())
    fit = cached_features([s for i, s in enumerate(train) if i not in held])
    held_out = cached_features([s for i, s in enumerate(train) if i in held])
    rows = []  # (pass, held-out AUROC, held-out BCE, test Macro & Micro)

    def watch(step: int, readout) -> None:  # type: ignore[no-untyped-def]
        with torch.no_grad():
            held_logits = readout.read_out(held_out.features).logit
        rows.append((step, auroc(held_out.labels.tolist(), held_logits.tolist()),
                     float(F.binary_cross_entropy_with_logits(held_logits, held_out.labels)),
                     test_macro_micro(readout, test)))

    kept = refit_readout(copy.deepcopy(classifier), fit, held_out, epochs=passes, lr=1e-4, weight_decay=1e-4,
                         seed=seed, after_pass=watch).best_epoch
    chosen = {"pass 0": rows[0], "auroc": rows[kept],  # the pass the product's refit keeps
              "bce": min(rows, key=lambda r: r[2]), "last": rows[-1]}
    return {rule: (row[0], row[3]) for rule, row in chosen.items()}


def soup(classifier, train: list[dict], test: TestSet,  # type: ignore[no-untyped-def]
         passes: int, seed: int, folds: int) -> tuple[str, float]:
    """(the folds' passes, test Macro & Micro AUROC) of the product's fold refit over all ``train``."""
    readout = copy.deepcopy(classifier)
    result = refit_readout_folds(readout, cached_features(train), folds=folds, epochs=passes, lr=1e-4,
                                 weight_decay=1e-4, seed=seed)
    return "/".join(map(str, result.fold_epochs)), test_macro_micro(readout, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=FOLDER:CKPT (see above)")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--splits", type=int, default=2)
    parser.add_argument("--folds", type=int, default=0, help="also the fold refit with this many folds")
    args = parser.parse_args()
    rules = [*RULES, *([f"folds {args.folds}"] if args.folds > 1 else [])]
    means: dict[str, list[float]] = {rule: [] for rule in rules}
    print("| run | split | " + " | ".join(rules) + " |\n|---|---|" + "---|" * len(rules))
    for spec in args.run:
        name, rest = spec.split("=", 1)
        folder, checkpoint = rest.split(":", 1)
        train = torch.load(Path(folder) / f"{name}-train.pt", weights_only=False)["slides"]
        test_slides = torch.load(Path(folder) / f"{name}-test.pt", weights_only=False)["slides"]
        test = (cached_features(test_slides), [s["class"] for s in test_slides])  # once per run
        model, _ = load_with_zoom(Path(checkpoint), "")
        for seed in range(args.splits):
            kept: dict[str, tuple] = probe(model.classifier, train, test, args.passes, seed)
            if args.folds > 1:
                kept[rules[-1]] = soup(model.classifier, train, test, args.passes, seed, args.folds)
            for rule in rules:
                means[rule].append(kept[rule][1])
            cells = " | ".join(f"{kept[r][1]:.2f} (pass {kept[r][0]})" for r in rules)
            print(f"| {name} ({folder}) | {seed} | {cells} |", flush=True)
    print("mean: " + ", ".join(f"{rule} {np.mean(v):.3f}" for rule, v in means.items()))


if __name__ == "__main__":
    main()
