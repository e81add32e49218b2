"""The shipped recipes (configs/*.yaml) load, and the demo's model runs forward on a virtual slide."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magnet.config_io import load_config
from magnet.models import build_model
from magnet.slides.pool import SlidePool
from magnet.training.recipe import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_recipes() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "magnet3_camelyon.yaml", "magnet4_camelyon.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_loads(path: Path) -> None:
    cfg = load_config(TrainConfig, path)
    assert cfg.model.num_layers >= 3 and cfg.optim.epochs >= 1


def test_demo_recipe_runs_its_levers() -> None:
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, next(p for p in CONFIGS if p.name == "demo.yaml"))
    assert cfg.model.head_mil and cfg.optim.head_warmup_steps > 0  # what docs/BENCHMARKS.md measured
    model = build_model(cfg.model).eval()
    pool = SlidePool(threads=1)
    with torch.no_grad():
        out = model([pool.get("synth:seed=5,size=32768x32768,lesion=micro")])
    assert out.logit.shape == (1,) and sorted(out.head_logits) == [1, 2, 3]
    final = out.boxes_level0[-1][0]
    sides = (final[:, 2] - final[:, 0]) / 32768
    # min_scale = 0.5: no layer zooms more than 2x, so no final patch is below 1/8 of the slide; max_scale
    # = 0.5 scales the spread of the untrained, near-flat maps to about half the parent.
    assert float(sides.min()) >= 0.125 - 1e-6 and float(sides.max()) < 0.4
