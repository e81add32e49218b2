"""The shipped recipes (configs/*.yaml) load, and the demo's model runs forward on a virtual slide."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magnet.config_io import load_config
from magnet.models import MagNetOutput, build_model
from magnet.slides.pool import SlidePool
from magnet.training.recipe import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_recipes() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "magnet3_camelyon.yaml", "magnet4_camelyon.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads(path: Path) -> None:
    cfg = load_config(TrainConfig, path)
    assert cfg.model.num_layers >= 3 and cfg.optim.epochs >= 1


def _demo_forward(name: str) -> MagNetOutput:
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, next(p for p in CONFIGS if p.name == name))
    assert cfg.model.head_mil and cfg.optim.head_warmup_steps > 0  # what docs/BENCHMARKS.md measured
    model = build_model(cfg.model).eval()
    pool = SlidePool(threads=1)
    with torch.no_grad():
        out = model([pool.get("synth:seed=5,size=32768x32768,lesion=micro")])
    assert out.logit.shape == (1,) and sorted(out.head_logits) == [1, 2, 3]
    return out


def test_demo_recipe_reads_27_final_patches_at_2_um_per_pixel() -> None:
    out = _demo_forward("demo.yaml")
    final = out.boxes_level0[-1][0]
    assert final.shape[0] == 27
    # min_scale = max_scale = 0.3: each layer takes 0.3 of its parent's side, so every final box is 0.027
    # of the slide (221 um of 8.2 mm), read at 112 px.
    sides = (final[:, 2] - final[:, 0]) / 32768
    assert torch.allclose(sides, torch.full_like(sides, 0.3**3), rtol=1e-3)
    assert out.patches[-1].shape[-1] == 112


def test_version_1_demo_recipe_runs_its_levers() -> None:
    final = _demo_forward("demo_v1.yaml").boxes_level0[-1][0]
    sides = (final[:, 2] - final[:, 0]) / 32768
    # min_scale = 0.5: no layer zooms more than 2x, so no final patch is below 1/8 of the slide; max_scale
    # = 0.5 scales the spread of the untrained, near-flat maps to about half the parent.
    assert float(sides.min()) >= 0.125 - 1e-6 and float(sides.max()) < 0.4
