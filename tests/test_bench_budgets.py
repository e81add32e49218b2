"""``bench/accuracy_vs_pixels.py``'s budgets: the shipped Camelyon recipe is the tree that was measured, and a
change of the recipes leaves the trees of the budgets measured before it as they were."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from magnet.config_io import load_config
from magnet.training.recipe import TrainConfig

BENCH = Path(__file__).resolve().parents[1] / "bench"
SIDE_UM = 8192.0  # the bench's 8.2-mm sets


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the script imports its sibling zoom_table
    try:
        spec = importlib.util.spec_from_file_location("accuracy_vs_pixels", BENCH / "accuracy_vs_pixels.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def resolved(bench: ModuleType, budget: str) -> TrainConfig:
    """The config a run of ``budget`` trains, as the bench composes it (less the manifest and the seed)."""
    recipe, _, overrides = bench.budget_recipe(budget, SIDE_UM)
    return load_config(TrainConfig, recipe, overrides)


def test_the_shipped_3_layer_recipe_is_the_measured_per_cell_tree(bench: ModuleType) -> None:
    shipped = resolved(bench, "magnet3recipe")
    assert shipped == resolved(bench, "magnet3view112direct")
    assert shipped.model.shared_heads and shipped.loss.head_value_target == "cells"
    assert shipped.refit.readout_instances == "cells" and shipped.model.readout_instances == "patches"
    # The recipe's tree before its final boxes were read from the slide: that key alone differs.
    sampled = resolved(bench, "magnet3view112refitcells")
    assert shipped.model.final_read == "direct"
    assert sampled == replace(shipped, model=replace(shipped.model, final_read="sampled"))


def test_budgets_measured_before_the_recipe_changed_keep_their_tree(bench: ModuleType) -> None:
    old = resolved(bench, "magnet3refit")
    assert (old.model.view_size, old.model.read_size, old.model.head_highpass) == (56, 112, 3.0)
    assert not old.model.shared_heads and old.loss.head_value_target == "probability"
    per_cell = resolved(bench, "magnet3view112sharedcells")  # measured before the refit over cells
    assert per_cell.refit.readout_instances is None and per_cell.model.readout_instances == "patches"
    four = resolved(bench, "magnet4recipepatchrefit")  # the 4-layer recipe as measured before that
    assert four.refit.readout_instances is None and four.model.num_layers == 4
    shipped_four = resolved(bench, "magnet4recipe")
    assert shipped_four.refit.readout_instances == "cells"
    assert four == replace(shipped_four, refit=four.refit)
    view112 = resolved(bench, "magnet3view112")
    assert (view112.model.view_size, view112.model.head_highpass) == (112, 6.0)
    assert not view112.model.shared_heads


@pytest.mark.parametrize(("layers", "side"), [(3, 446.0), (4, 453.0)])
def test_tree_scales_read_the_final_patches_at_2_um_per_pixel(
    bench: ModuleType, layers: int, side: float
) -> None:
    scales_key, oracle_key = bench.tree_scales(SIDE_UM, layers)
    scales = [float(v) for v in scales_key.split("=")[1].strip("[]").split(",")]
    product = math.prod(scales)
    assert len(scales) == layers and scales[0] == 0.5
    assert product * SIDE_UM == pytest.approx(side, abs=1.0)
    assert float(oracle_key.split("=")[1]) == pytest.approx(product, abs=1e-3)
    cfg = resolved(bench, f"magnet{layers}recipe")
    assert list(cfg.model.layer_scales) == scales and cfg.model.num_layers == layers


def test_the_fine_budget_halves_the_final_boxes_and_changes_nothing_else(bench: ModuleType) -> None:
    direct = resolved(bench, "magnet3view112direct")
    fine = resolved(bench, "magnet3view112fine")
    side = math.prod(fine.model.layer_scales) * SIDE_UM
    assert side == pytest.approx(217.0, abs=1.0) and side / fine.model.final_size <= 1.0  # um per output px
    assert fine.model.layer_scales[0] == 0.5 and fine.model.oracle_side == pytest.approx(0.026, abs=1e-3)
    assert fine == replace(direct, model=replace(direct.model, layer_scales=fine.model.layer_scales,
                                                 oracle_side=fine.model.oracle_side))


def test_the_hard_negative_budget_is_the_direct_tree_with_zero_negative_targets(bench: ModuleType) -> None:
    direct = resolved(bench, "magnet3view112direct")
    negatives = resolved(bench, "magnet3view112directneg")
    assert direct.loss.head_value > 0 and direct.loss.head_value_negatives == "target"
    assert negatives == replace(direct, loss=replace(direct.loss, head_value_negatives="zero"))
