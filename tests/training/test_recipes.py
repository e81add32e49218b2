"""The shipped recipes (configs/*.yaml) load, and the demo's model runs forward on a virtual slide."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magnet.config_io import load_config
from magnet.models import MagNetOutput, build_model
from magnet.models.recentre import final_detail_px
from magnet.slides.pool import SlidePool
from magnet.training.recipe import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _recipe(name: str) -> Path:
    return next(p for p in CONFIGS if p.name == name)


def test_there_are_recipes() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "magnet3_camelyon.yaml", "magnet4_camelyon.yaml",
                                         "magnet3_paper.yaml", "magnet4_paper.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads(path: Path) -> None:
    cfg = load_config(TrainConfig, path)
    assert cfg.model.num_layers >= 3 and cfg.optim.epochs >= 1


def _demo_forward(name: str) -> MagNetOutput:
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, _recipe(name))
    assert cfg.model.head_mil and cfg.optim.head_warmup_steps > 0  # what docs/BENCHMARKS.md measured
    model = build_model(cfg.model).eval()
    pool = SlidePool(threads=1)
    with torch.no_grad():
        out = model([pool.get("synth:seed=5,size=32768x32768,lesion=micro")])
    assert out.logit.shape == (1,) and sorted(out.head_logits) == [1, 2, 3]
    return out


def test_demo_recipe_reads_27_final_patches_at_2_um_per_pixel() -> None:
    cfg = load_config(TrainConfig, _recipe("demo.yaml"))
    # the levers of docs/BENCHMARKS.md, "The demo with shared heads and the per-cell head value"
    assert cfg.model.shared_heads and cfg.loss.head_value_target == "cells"
    out = _demo_forward("demo.yaml")
    final = out.boxes_level0[-1][0]
    assert final.shape[0] == 27
    # min_scale = max_scale = 0.3: each layer takes 0.3 of its parent's side, so every final box is 0.027
    # of the slide (221 um of 8.2 mm), read at 112 px.
    sides = (final[:, 2] - final[:, 0]) / 32768
    assert torch.allclose(sides, torch.full_like(sides, 0.3**3), rtol=1e-3)
    assert out.patches[-1].shape[-1] == 112


def test_demo_recipe_places_the_same_boxes_on_one_thread_and_on_two() -> None:
    # model.box_grid (docs/method.md §9): without it the heads' maps differ in their last bits between
    # thread counts and the boxes drift apart layer by layer (checked when the key was set: 0.0005 to 0.001
    # of the slide here, untrained heads); on their parents' pixel grids they stay put.
    cfg = load_config(TrainConfig, _recipe("demo.yaml"))
    assert cfg.model.box_grid
    model = build_model(cfg.model).eval()
    slide = SlidePool(threads=1).get("synth:seed=5,size=32768x32768,lesion=micro")
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                outs.append(model([slide]))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(outs[0].boxes_level0, outs[1].boxes_level0, strict=True):
        assert torch.equal(one, two)
    assert torch.allclose(outs[0].logit, outs[1].logit, atol=1e-5)


def test_version_1_demo_recipe_runs_its_levers() -> None:
    final = _demo_forward("demo_v1.yaml").boxes_level0[-1][0]
    sides = (final[:, 2] - final[:, 0]) / 32768
    # min_scale = 0.5: no layer zooms more than 2x, so no final patch is below 1/8 of the slide; max_scale
    # = 0.5 scales the spread of the untrained, near-flat maps to about half the parent.
    assert float(sides.min()) >= 0.125 - 1e-6 and float(sides.max()) < 0.4


# The detail a final patch holds (um of slide per pixel of detail): the 3-layer recipe reads each final box
# from the slide; the 4-layer one draws it from its parent's read, where a box of 0.29 of it holds 0.58 of
# final_size pixels of slide (docs/method.md §5).
DETAIL_UM = {"magnet3_camelyon.yaml": 2.0, "magnet4_camelyon.yaml": 2.0 / (0.29 * 2)}


@pytest.mark.parametrize("name", ["magnet3_camelyon.yaml", "magnet4_camelyon.yaml"])
def test_camelyon_recipes_place_every_final_patch_at_2_um_per_pixel(name: str) -> None:
    torch.set_num_threads(1)
    path = _recipe(name)
    final_px = load_config(TrainConfig, path).model.final_size
    # Lite0 in place of InceptionV3 (its ImageNet weights ship with the package: offline), small patches for
    # speed: neither changes where the boxes go.
    cfg = load_config(TrainConfig, path, ["model.backbone=efficientnet_lite0", "model.final_size=64",
                                          "model.final_read_size=128", "model.classifier_input_size=64"])
    assert cfg.model.head_mil and cfg.loss.head_value > 0 and cfg.model.sibling_layout == "tissue_strips"
    assert cfg.refit.epochs > 0  # the readout refitted on the final patches after training
    # the learned-zoom levers measured on virtual slides (docs/BENCHMARKS.md, "The Camelyon recipes since
    # 2026-12-06")
    assert cfg.model.view_size == 112 and cfg.model.shared_heads and cfg.loss.head_value_target == "cells"
    model = build_model(cfg.model).eval()
    # A virtual slide of a Camelyon slide's size: 50 mm on its longer side at 0.25 um/px.
    with torch.no_grad():
        out = model([SlidePool(threads=1).get("synth:seed=5,size=200000x100000,lesion=micro")])
    final = out.boxes_level0[-1][0]
    assert final.shape[0] == cfg.model.patches_at(cfg.model.num_layers) and not cfg.model.frozen_patch
    # Every final box is 0.009 of the 50-mm canvas, about 450 um: 2 um per pixel of a 224-px patch.
    um_per_px = (final[:, 2] - final[:, 0]) * 0.25 / final_px
    assert torch.allclose(um_per_px, torch.full_like(um_per_px, 2.0), rtol=0.03)
    layers = [boxes[0].double().numpy() for boxes in out.boxes_level0]
    # the share of the patch's pixels that hold slide detail (final_size and final_read_size are both shrunk
    # here, their ratio kept), at the recipe's own 2 um per output pixel
    detail_share = final_detail_px(cfg.model, layers, root_side=200000) / cfg.model.final_size
    detail_um = um_per_px.double().numpy() / detail_share
    assert detail_um == pytest.approx([DETAIL_UM[name]] * len(detail_um), rel=0.05)
