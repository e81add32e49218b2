"""Tissue strips (docs/method.md §9): strips whose edges share each parent view's tissue among the heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_fixtures import TISSUE, parent_inputs, small_config, textured_source

from magnet.errors import ConfigError
from magnet.layers.tissue import quantile_strip_edges, tissue_pixels, tissue_strip_masks
from magnet.models import MagNetConfig, MagnifyingLayer, build_model
from magnet.models.zoom_levers import TissueStripLayout, strip_masks
from magnet.training.checkpoints import config_dict, load_model, save_checkpoint
from magnet.training.recipe import DataConfig, TrainConfig

V = 24
TISSUE_RGB = torch.tensor(TISSUE).view(3, 1, 1)


def _view(tissue: torch.Tensor) -> torch.Tensor:
    """A view ``(3, V, V)``: the tissue colour where ``tissue`` is True, light grey glass elsewhere."""
    return torch.where(tissue, TISSUE_RGB, torch.full((3, 1, 1), 0.9))


def _corner(rows: int = 10, cols: int = 10) -> torch.Tensor:
    tissue = torch.zeros(V, V, dtype=torch.bool)
    tissue[:rows, :cols] = True
    return tissue


def _assert_strips_are_sound(masks: torch.Tensor, tissue: torch.Tensor) -> None:
    """Disjoint, each non-empty, every tissue pixel in exactly one strip."""
    count = masks.long().sum(dim=-3)
    assert int(count.max()) <= 1
    assert bool(masks.flatten(-2).any(dim=-1).all())
    assert bool((count[tissue] == 1).all())


# --- the rule and the edges --------------------------------------------------------------------------------
def test_tissue_is_coloured_not_grey_glass_or_black_canvas() -> None:
    pixels = torch.cat([TISSUE_RGB, torch.full((3, 1, 1), 0.9), torch.zeros(3, 1, 1)], dim=-1)  # (3, 1, 3)
    assert tissue_pixels(pixels, 15.0).tolist() == [[True, False, False]]
    # The threshold is on the 0-255 scale: a spread of 20 levels passes 15, not 25.
    faint = torch.tensor([0.5, 0.5 - 20 / 255, 0.5]).view(3, 1, 1)
    assert tissue_pixels(faint, 15.0).item() and not tissue_pixels(faint, 25.0).item()


@pytest.mark.parametrize(("heads", "along_x"), [(2, True), (3, True), (3, False)])
def test_tissue_in_one_half_gives_every_strip_a_share_of_it(heads: int, along_x: bool) -> None:
    tissue = torch.zeros(V, V, dtype=torch.bool)
    tissue[:, V // 2 :] = True  # the right half (cut along x); the bottom half once transposed
    if not along_x:
        tissue = tissue.T.contiguous()
    masks = tissue_strip_masks(tissue, heads, along_x)
    assert masks.shape == (heads, V, V)
    _assert_strips_are_sound(masks, tissue)
    assert not bool((masks & ~tissue).any())  # every strip lies inside the tissue half
    shares = (masks & tissue).flatten(1).sum(1).float() / tissue.sum()
    assert torch.allclose(shares, torch.full((heads,), 1 / heads), atol=1 / (V // 2))


def test_quantile_edges_by_hand() -> None:
    profile = torch.tensor([[0.0, 0, 4, 4, 4, 4, 0, 0, 0, 0]])  # tissue in columns 2..5
    assert quantile_strip_edges(profile, 2).tolist() == [[2, 4, 6]]
    # Mass 1, 1, 6, 1, 1: the middle column holds most of each third's quantile
    assert quantile_strip_edges(torch.tensor([[1.0, 1, 6, 1, 1]]), 3).tolist() == [[0, 2, 3, 5]]


def test_blank_view_falls_back_to_equal_strips() -> None:
    blank = torch.zeros(2, V, V, dtype=torch.bool)
    for layer, along_x in ((1, True), (2, False)):
        masks = tissue_strip_masks(blank, 3, along_x)
        assert torch.equal(masks, strip_masks(3, layer, V).expand(2, -1, -1, -1))
        assert torch.equal(masks.long().sum(dim=1), torch.ones(2, V, V, dtype=torch.long))  # a partition


@pytest.mark.parametrize("column", [0, 7, V - 1])
def test_every_strip_keeps_a_column_when_the_tissue_is_one_column(column: int) -> None:
    tissue = torch.zeros(V, V, dtype=torch.bool)
    tissue[5:9, column] = True
    masks = tissue_strip_masks(tissue, 3, True)
    _assert_strips_are_sound(masks, tissue)
    widths = masks.any(dim=1).sum(dim=1)
    assert widths.tolist() == [1, 1, 1]


def test_random_views_give_sound_strips() -> None:
    g = torch.Generator().manual_seed(0)
    tissue = torch.rand(20, V, V, generator=g) < torch.rand(20, 1, 1, generator=g) * 0.3
    for along_x in (True, False):
        _assert_strips_are_sound(tissue_strip_masks(tissue, 3, along_x), tissue)


# --- in a layer --------------------------------------------------------------------------------------------
def _layer(zoom: str, layout: str, **overrides: object) -> MagnifyingLayer:
    config = small_config(patches_per_layer=(3, 3, 3), frozen_patch=False, sibling_layout=layout, zoom=zoom,
                          min_scale=0.3, max_scale=0.3, random_zoom_min_scale=0.3, **overrides)
    return MagnifyingLayer(3, config, 1).eval()


def _centres_on(theta: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
    """Whether each box centre (t_x, t_y) in [-1, 1] lands on a tissue pixel of the view."""
    pixel = ((theta[..., 1:] + 1) / 2 * V).long().clamp(0, V - 1)
    return tissue[pixel[..., 1], pixel[..., 0]]


def test_fixed_boxes_of_a_view_with_tissue_in_a_corner_lie_on_tissue() -> None:
    tissue = _corner()
    images = _view(tissue).expand(2, 1, 3, V, V)
    reads = torch.rand(2, 1, 3, 2 * V, 2 * V)
    with torch.no_grad():
        tissue_boxes = _layer("fixed", "tissue_strips")(images, reads).theta
        equal_boxes = _layer("fixed", "strips")(images, reads).theta
    assert bool(_centres_on(tissue_boxes, tissue).all())
    assert not bool(_centres_on(equal_boxes, tissue).all())  # equal strips put a box on glass
    # The flat maps lie on each head's tissue strip: their support is the strip.
    blank = torch.full((1, 1, 3, V, V), 0.9)
    with torch.no_grad():
        fallback = _layer("fixed", "tissue_strips")(blank, reads[:1]).theta
        equal = _layer("fixed", "strips")(blank, reads[:1]).theta
    assert torch.allclose(fallback, equal)


def test_shapes_with_several_slides_and_parents_and_maps_stay_in_their_strips() -> None:
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(3, 2, 2), frozen_patch=False, sibling_layout="tissue_strips",
                          head_mil=True, head_init_std=0.5)
    layer = MagnifyingLayer(2, config, 2).eval()  # layer 2 of this tree: 3 parents per slide, cut along y
    assert isinstance(layer.layout, TissueStripLayout)
    images, reads = parent_inputs(seed=1, batch=2, parents=3)
    images[0, 1] = _view(_corner(cols=V))  # one parent's tissue in its top rows only
    with torch.no_grad():
        out = layer(images, reads)
        masks = layer.layout.view_masks(images)
    assert masks.shape == (2, 6, V, V) and out.prob.shape == (2, 6, V, V)
    assert out.theta.shape == (2, 6, 3) and out.head_logits is not None and out.head_logits.shape == (2,)
    assert float(out.prob[~masks].abs().sum()) == 0.0
    assert torch.allclose(out.prob.sum(dim=(-2, -1)), torch.ones(2, 6))
    # Parent 1 of slide 0 (heads 2 and 3): its two strips share the top rows.
    assert not bool(masks[0, 2:4, 10:].any())
    with pytest.raises(ValueError, match="pass masks"):
        layer.layout.confine(out.prob)


def test_gradients_reach_the_heads_through_head_mil_and_theta() -> None:
    torch.manual_seed(0)
    layer = _layer("learned", "tissue_strips", head_mil=True, head_init_std=0.5).train()
    images, reads = parent_inputs(seed=2, batch=2, parents=1)
    out = layer(images, reads)
    assert out.head_logits is not None
    (out.head_logits.sum() + out.patches.mean()).backward()
    grads = [p.grad for p in layer.head_parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_head_mil_is_allowed_and_offsets_still_refused() -> None:
    assert small_config(sibling_layout="tissue_strips", head_mil=True).head_mil
    with pytest.raises(ConfigError, match="head_mil=True needs sibling_layout=strips or tissue_strips"):
        small_config(sibling_layout="offset", head_mil=True)
    with pytest.raises(ConfigError, match="tissue_strip_threshold"):
        small_config(tissue_strip_threshold=300.0)


def test_checkpoint_and_config_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model_cfg = small_config(sibling_layout="tissue_strips", tissue_strip_threshold=20.0, head_mil=True,
                             backbone="small", aux_backbone="small", gru_hidden=8, aux_layers=())
    assert MagNetConfig(**{k: getattr(model_cfg, k) for k in MagNetConfig.field_names()}) == model_cfg
    model = build_model(model_cfg).eval()
    config = TrainConfig(model=model_cfg, data=DataConfig(manifest="unused.csv"))
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, {"config": config_dict(config), "model": model.state_dict(), "epoch": 1,
                           "best_score": 0.5, "history": []})
    loaded, loaded_config = load_model(path)
    assert loaded_config.model == model_cfg
    assert loaded.layers[0].layout.threshold == 20.0
    sources = [textured_source(seed=3), textured_source(seed=4)]
    with torch.no_grad():
        a, b = model(sources), loaded(sources)
    assert torch.equal(a.logit, b.logit)
    assert all(torch.equal(x, y) for x, y in zip(a.thetas, b.thetas, strict=True))
