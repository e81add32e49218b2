"""Zoom controls of MagnifyingLayer / MagNet (config key ``zoom``, docs/method.md §8): fixed and random."""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import SMALL_SIZES as SIZES
from model_fixtures import parent_inputs, small_config, textured_source

from magnet.errors import ConfigError
from magnet.layers import peak_translation, snap_translation
from magnet.models import MagNet, MagnifyingLayer, build_model, model_config
from magnet.training.losses import magnet_loss


def test_zoom_key_is_validated() -> None:
    with pytest.raises(ConfigError, match="zoom='lesion'"):
        small_config(zoom="lesion")
    with pytest.raises(ConfigError, match="random_zoom_min_scale"):
        small_config(random_zoom_min_scale=0.01)  # below min_scale = 0.05
    with pytest.raises(ConfigError, match="random_zoom_min_scale"):
        small_config(random_zoom_min_scale=1.5)
    assert small_config().zoom == "learned"
    # head_init_std = 0 (exactly flat logits) is a valid config.
    assert small_config(head_init_std=0.0).head_init_std == 0.0


def test_fixed_ignores_the_image_and_equals_flat_heads() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fixed = MagnifyingLayer(3, small_config(patches_per_layer=(2, 3, 2), zoom="fixed"), 2).eval()
    images_a, reads_a = parent_inputs(seed=0)
    images_b, reads_b = parent_inputs(seed=7)
    out_a, out_b = fixed(images_a, reads_a), fixed(images_b, reads_b)
    assert torch.equal(out_a.theta, out_b.theta)
    assert not out_a.theta.requires_grad
    # The learned mode with exactly flat logits (head_init_std = 0) gives the same layout at init.
    learned = MagnifyingLayer(3, small_config(patches_per_layer=(2, 3, 2), head_init_std=0.0), 2).eval()
    out_learned = learned(images_a, reads_a)
    assert torch.allclose(out_learned.theta, out_a.theta, atol=1e-6)
    assert out_a.prob.shape == out_learned.prob.shape and out_a.support.shape == out_learned.support.shape
    # Frozen child stays the identity; headed siblings sit on their offsets with the flat-map scale.
    theta = out_a.theta.view(2, 2, 3, 3)
    assert torch.equal(theta[:, :, 0], torch.tensor([1.0, 0.0, 0.0]).expand(2, 2, 3))
    assert torch.allclose(theta[0, 0, 1:, 1:], fixed.layout.offsets, atol=1e-6)
    assert torch.allclose(theta[..., 1:, 0], torch.full((2, 2, 2), math.sqrt(1 - 1 / 24**2)), atol=1e-6)


def test_random_boxes_in_bounds_seeded_and_fresh() -> None:
    torch.set_num_threads(1)
    config = small_config(patches_per_layer=(2, 3, 2), zoom="random", random_zoom_min_scale=0.25)
    layer = MagnifyingLayer(3, config, 2).eval()
    images, reads = parent_inputs(seed=0, batch=8)
    out = layer(images, reads, generator=torch.Generator().manual_seed(1))
    theta = out.theta.view(8, 2, 3, 3)
    assert torch.equal(theta[:, :, 0], torch.tensor([1.0, 0.0, 0.0]).expand(8, 2, 3))  # frozen kept
    drawn = theta[:, :, 1:].reshape(-1, 3)
    scale, translation = drawn[:, :1], drawn[:, 1:]
    assert not out.theta.requires_grad
    assert bool((scale >= 0.25).all() and (scale <= 1).all())
    assert scale.std() > 0.05  # actually spread out
    # The box [t - s, t + s] stays inside the parent's [-1, 1].
    assert bool(((translation - scale) >= -1 - 1e-6).all() and ((translation + scale) <= 1 + 1e-6).all())
    same = layer(images, reads, generator=torch.Generator().manual_seed(1))
    other = layer(images, reads, generator=torch.Generator().manual_seed(2))
    assert torch.equal(same.theta, out.theta)
    assert not torch.allclose(other.theta, out.theta)
    # Without a generator: torch's global RNG, fresh boxes each forward.
    assert not torch.allclose(layer(images, reads).theta, layer(images, reads).theta)


def test_random_roi_stays_inside_parent_through_the_tree() -> None:
    torch.set_num_threads(1)
    model = build_model("tiny", zoom="random", gru_hidden=16, **SIZES).eval()
    source = textured_source()
    with torch.no_grad():
        out = model([source], generator=torch.Generator().manual_seed(0))
    for layer in range(1, len(out.rois)):
        parent = out.rois[layer - 1].unsqueeze(2)  # (1, N_p, 1, 3, 3)
        children = out.rois[layer].view(1, parent.shape[1], -1, 3, 3)
        # Half-size h, centre c (canvas coordinates): the child's square lies inside its parent's.
        lower = children[..., :2, 2] - children[..., :1, 0] >= parent[..., :2, 2] - parent[..., :1, 0] - 1e-9
        upper = children[..., :2, 2] + children[..., :1, 0] <= parent[..., :2, 2] + parent[..., :1, 0] + 1e-9
        assert bool(lower.all() and upper.all())


@pytest.mark.parametrize("zoom", ["learned", "fixed", "random"])
def test_tiny_magnet_forward_backward(zoom: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("tiny", zoom=zoom, gru_hidden=16, **SIZES)
    sources = [textured_source(seed=0), textured_source(64, 96, seed=1)]
    out = model(sources, generator=torch.Generator().manual_seed(0))
    loss = magnet_loss(out, torch.tensor([0.0, 1.0])).total
    loss.backward()
    heads = [p for name, p in model.named_parameters() if ".heads." in name]
    others = [p for name, p in model.named_parameters() if ".heads." not in name]
    assert heads and others
    assert all(p.grad is not None for p in others)
    if zoom == "learned":
        assert all(p.grad is not None for p in heads)
    else:
        assert all(p.grad is None for p in heads)  # heads not evaluated in the controls
        assert not any(t.requires_grad for t in out.thetas)
    assert torch.isfinite(loss)


def test_max_scale_makes_the_untrained_layout_zoom() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for zoom in ("fixed", "learned"):
        layer = MagnifyingLayer(3, small_config(patches_per_layer=(2, 3, 2), zoom=zoom, max_scale=0.5,
                                                head_init_std=0.0), 2).eval()
        theta = layer(*parent_inputs(seed=0)).theta.view(2, 2, 3, 3)
        frozen = torch.tensor([1.0, 0.0, 0.0]).expand(2, 2, 3)
        assert torch.equal(theta[:, :, 0], frozen)  # the frozen patch still shows the whole parent
        expected = torch.full((2, 2, 2), 0.5 * math.sqrt(1 - 1 / 24**2))
        assert torch.allclose(theta[..., 1:, 0], expected, atol=1e-6)
    with pytest.raises(ConfigError, match="max_scale"):
        model_config("tiny", max_scale=0.01)


@pytest.mark.parametrize("zoom", ["learned", "fixed", "random"])
def test_layer_scales_fix_each_layers_zoom_and_the_final_side(zoom: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    scales = (0.6, 0.5, 0.25)
    model = build_model("tiny", zoom=zoom, gru_hidden=16, frozen_patch=False, patches_per_layer=(2, 2, 2),
                        layer_scales=scales, sibling_layout="strips", **SIZES).eval()
    with torch.no_grad():
        out = model([textured_source(seed=3)], generator=torch.Generator().manual_seed(0))
    for theta, scale in zip(out.thetas, scales, strict=True):
        assert torch.allclose(theta[..., 0], torch.full_like(theta[..., 0], scale), atol=1e-6)
    # A final box's half side, in canvas units of the root's, is the product of the layers' s.
    root_half = out.root_rois[0, 0, 0]
    final_half = out.rois[-1][0, :, 0, 0] / root_half
    assert torch.allclose(final_half, torch.full_like(final_half, math.prod(scales)), atol=1e-6)


def test_layer_scales_need_one_value_per_layer() -> None:
    with pytest.raises(ConfigError, match=r"layer_scales=\[0.5, 0.5\]: needs one s per layer \(3"):
        small_config(patches_per_layer=(2, 2, 2), layer_scales=(0.5, 0.5))
    with pytest.raises(ConfigError, match="layer_scales"):
        small_config(patches_per_layer=(2, 2, 2), layer_scales=(0.5, 0.5, 0.0))
    assert small_config().scales_at(2) == (0.05, 1.0)  # off: min_scale and max_scale at every layer


def _exploring_pair(explore: float) -> tuple[MagnifyingLayer, MagnifyingLayer]:
    """Two layers with the same heads: learned, and learned with exploration."""
    layers = []
    for value in (0.0, explore):
        torch.manual_seed(0)
        config = small_config(patches_per_layer=(2, 3, 2), sibling_layout="strips", explore=value)
        layers.append(MagnifyingLayer(3, config, 2))
    return layers[0], layers[1]


def test_exploration_places_as_learned_in_evaluation() -> None:
    torch.set_num_threads(1)
    learned, exploring = _exploring_pair(0.9)
    images, reads = parent_inputs(seed=0)
    expected = learned.eval()(images, reads).theta
    got = exploring.eval()(images, reads, generator=torch.Generator().manual_seed(0)).theta
    assert torch.equal(got, expected)


def test_explored_boxes_keep_the_heads_scale_and_lie_where_a_head_could_put_them() -> None:
    torch.set_num_threads(1)
    learned, exploring = _exploring_pair(0.95)
    images, reads = parent_inputs(seed=0, batch=8)
    greedy = learned.train()(images, reads).theta.view(8, 2, 3, 3)[:, :, 1:]
    out = exploring.train()(images, reads, generator=torch.Generator().manual_seed(3))
    again = exploring(images, reads, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.theta, again.theta)  # a function of the generator
    theta = out.theta.view(8, 2, 3, 3)
    assert torch.equal(theta[:, :, 0], torch.tensor([1.0, 0.0, 0.0]).expand(8, 2, 3))  # frozen child kept
    explored = theta[:, :, 1:]
    assert torch.allclose(explored[..., 0], greedy[..., 0])  # the head's scale
    moved = (explored[..., 1:] - greedy[..., 1:]).abs().amax(-1) > 1e-4
    assert int(moved.sum()) >= 16  # of 32 boxes; 30 expected at explore = 0.95
    # Every box is the one a head whose map is a single pixel of its strip would place.
    flat = exploring.layout.flat_maps().view(2, -1, 24, 24)  # (K_heads, strip), the same for every parent
    for head in range(2):
        pixels = torch.nonzero(flat[head, 0] > 0)
        maps = torch.zeros(len(pixels), 2, 24, 24)
        maps[torch.arange(len(pixels)), head, pixels[:, 0], pixels[:, 1]] = 1.0
        reachable = exploring.theta_from_maps(maps)[:, head, 1:]  # (pixels, 2)
        boxes = explored[:, :, head, 1:].reshape(-1, 2)[moved[:, :, head].reshape(-1)]
        assert bool((torch.cdist(boxes.double(), reachable.double()).amin(1) < 1e-5).all())


def test_exploration_is_for_the_learned_zoom_only() -> None:
    with pytest.raises(ConfigError, match="explore=0.2: only the learned zoom explores"):
        small_config(zoom="fixed", explore=0.2)
    with pytest.raises(ConfigError, match="explore"):
        small_config(explore=1.0)


def test_peak_box_centre_moves_only_the_learned_boxes_translation() -> None:
    torch.set_num_threads(1)
    images, reads = parent_inputs(seed=0)
    outs = {}
    for centre in ("mean", "peak"):
        torch.manual_seed(0)
        config = small_config(patches_per_layer=(2, 3, 2), sibling_layout="strips", head_init_std=1.0,
                              box_centre=centre)
        outs[centre] = MagnifyingLayer(3, config, 2).eval()(images, reads)
    mean, peak = (outs[c].theta.view(2, 2, 3, 3)[:, :, 1:] for c in ("mean", "peak"))
    assert torch.equal(outs["mean"].prob, outs["peak"].prob)  # the same heads and maps
    assert torch.equal(peak[..., 0], mean[..., 0])  # eq. 1's scale
    prob = outs["peak"].prob.view(2, 2, 2, 24, 24)
    torch.testing.assert_close(peak[..., 1:], peak_translation(prob, peak[..., 0]))
    moved = float((peak[..., 1:] - mean[..., 1:]).detach().abs().amax())
    assert moved > 0.05  # sharp random maps: the two readings differ


def test_the_controls_ignore_box_centre() -> None:
    torch.set_num_threads(1)
    images, reads = parent_inputs(seed=0)
    thetas = []
    for centre in ("mean", "peak"):
        config = small_config(patches_per_layer=(2, 3, 2), sibling_layout="tissue_strips", zoom="fixed",
                              box_centre=centre)
        thetas.append(MagnifyingLayer(3, config, 2).eval()(images, reads).theta)
    assert torch.equal(thetas[0], thetas[1])
    with pytest.raises(ConfigError, match="box_centre='mode'"):
        small_config(box_centre="mode")


def test_box_grid_puts_evaluated_boxes_on_the_parent_views_pixels_and_leaves_training_alone() -> None:
    torch.set_num_threads(1)
    images, reads = parent_inputs(seed=0)
    view = images.shape[-1]
    layers = {}
    for grid in (False, True):
        torch.manual_seed(0)
        config = small_config(patches_per_layer=(2, 3, 2), sibling_layout="strips", head_init_std=1.0,
                              box_grid=grid)
        layers[grid] = MagnifyingLayer(3, config, 2)
    with torch.no_grad():
        trained = {grid: layer.train()(images, reads).theta for grid, layer in layers.items()}
        evaluated = {grid: layer.eval()(images, reads).theta for grid, layer in layers.items()}
    assert torch.equal(trained[False], trained[True])  # training places boxes as without the key
    free, snapped = (evaluated[g].view(2, 2, 3, 3)[:, :, 1:] for g in (False, True))
    assert torch.equal(snapped[..., 0], free[..., 0])  # the scale is kept
    steps = snapped[..., 1:] * view / 2  # translations in pixels of the parent view
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert float((snapped[..., 1:] - free[..., 1:]).abs().amax()) <= 1 / view + 1e-6  # half a pixel at most
    assert float((snapped[..., 1:] - free[..., 1:]).abs().amax()) > 0  # random maps: off the grid before


@pytest.mark.parametrize("grid", [False, True])
def test_box_grid_keeps_boxes_still_under_a_rounding_sized_change_of_the_maps(grid: bool) -> None:
    torch.set_num_threads(1)
    images, reads = parent_inputs(seed=0)
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 3, 2), sibling_layout="strips", head_init_std=1.0,
                          box_grid=grid)
    layer = MagnifyingLayer(3, config, 2).eval()
    with torch.no_grad():
        before = layer(images, reads).theta
        for parameter in layer.heads.parameters():
            parameter.mul_(1 + 1e-6)  # what another thread count's rounding does to the maps, and more
        after = layer(images, reads).theta
    # On the grid the centres stay on their pixel; off it they move. This config's scale follows its map's
    # spread, which the change moves either way.
    assert torch.equal(before[..., 1:], after[..., 1:]) == grid
    assert not torch.equal(before[..., 0], after[..., 0])


def test_snap_translation_rounds_to_the_grid_inside_the_parent() -> None:
    theta = torch.tensor([[0.3, 0.013, -0.999], [0.5, 0.0, 0.26]])
    snapped = snap_translation(theta, 10)  # one pixel = 0.2
    torch.testing.assert_close(snapped, torch.tensor([[0.3, 0.0, -0.8], [0.5, 0.0, 0.2]]))
    with pytest.raises(ValueError, match="view_size >= 1"):
        snap_translation(theta, 0)


def _tree(**overrides: object) -> MagNet:
    torch.manual_seed(0)
    return build_model("tiny", gru_hidden=16, sibling_layout="tissue_strips", head_mil=True, theta_grad=False,
                       **SIZES, **overrides)


def test_learned_layers_leave_the_other_layers_to_the_fixed_layout() -> None:
    torch.set_num_threads(1)
    sources = [textured_source(seed=0), textured_source(64, 96, seed=1)]
    generator = torch.Generator().manual_seed(0)
    fixed = _tree(zoom="fixed").eval()(sources, generator=generator)
    # Layer 1 as the fixed layout places it, so layer 2 sees the same parents: its boxes differ from the
    # fixed layout's only where its heads put them.
    model = _tree(learned_layers=(2,)).train()
    out = model(sources, generator=generator)
    assert sorted(out.head_logits) == [2] and sorted(out.scores) == [2]
    assert torch.equal(out.thetas[0], fixed.thetas[0])
    assert not torch.allclose(out.thetas[1], fixed.thetas[1])
    assert torch.equal(out.rois[0], fixed.rois[0])
    magnet_loss(out, torch.tensor([0.0, 1.0])).total.backward()
    for name, p in model.named_parameters():
        if ".heads." in name and not name.endswith("log_temperature"):  # idle with theta's gradient cut
            assert (p.grad is not None) == name.startswith("layers.1."), name
    assert model.uses_heads and not _tree(zoom="fixed").uses_heads


def test_learned_layers_naming_every_layer_is_the_learned_zoom() -> None:
    torch.set_num_threads(1)
    sources = [textured_source(seed=0)]
    every = _tree(learned_layers=(1, 2, 3)).eval()(sources)
    plain = _tree().eval()(sources)
    assert torch.equal(every.logit, plain.logit)
    assert all(torch.equal(a, b) for a, b in zip(every.thetas, plain.thetas, strict=True))
    assert _tree().config.zoom_at(2) == "learned" and _tree(learned_layers=(1,)).config.zoom_at(2) == "fixed"
