"""Levers of docs/method.md §9: pooled readouts, sibling strips, head MIL, the low-pass gradient for theta."""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import parent_inputs, small_config, textured_source

from magnet.errors import ConfigError
from magnet.layers.blur import gaussian_blur, low_pass_gradient
from magnet.layers.heads import SharedLocalisationHeads
from magnet.models import Classifier, MagnifyingLayer, build_model
from magnet.models.classifier import attention_running, pool_running
from magnet.models.zoom_levers import strip_masks
from magnet.training.losses import LossWeights, magnet_loss


# --- readout -----------------------------------------------------------------------------------
def test_pool_running_max_and_log_mean_exp() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    assert torch.equal(pool_running(logits, "max"), torch.tensor([[0.0, 2.0, 2.0, 2.0]]))
    expected = [math.log(sum(math.exp(v) for v in logits[0, : n + 1].tolist()) / (n + 1)) for n in range(4)]
    assert torch.allclose(pool_running(logits, "lse"), torch.tensor([expected]), atol=1e-6)
    # Equal logits pool to themselves (log-MEAN-exp), whatever the number of patches.
    assert torch.allclose(pool_running(torch.full((1, 5), 0.3), "lse"), torch.full((1, 5), 0.3))


@pytest.mark.parametrize("readout", ["max", "lse", "attention"])
def test_pooled_classifier_has_no_gru_and_every_patch_counts(readout: str) -> None:
    torch.manual_seed(0)
    classifier = Classifier("small", gru_hidden=16, input_size=32, readout=readout)
    assert classifier.gru is None
    patches = torch.rand(2, 5, 3, 32, 32, requires_grad=True)
    out = classifier(patches)
    assert out.logit.shape == (2,) and out.running_logits.shape == (2, 5)
    assert torch.equal(out.logit, out.running_logits[:, -1])
    # The running pool never decreases under max; its last step pools all patches.
    if readout == "max":
        assert bool((out.running_logits.diff(dim=1) >= 0).all())
    out.logit.sum().backward()
    assert patches.grad is not None
    touched = patches.grad.abs().flatten(2).sum(-1) > 0  # (B, N)
    assert int(touched.sum()) >= (2 if readout == "max" else 10)


def test_attention_running_is_the_weighted_sum_over_each_prefix() -> None:
    torch.manual_seed(0)
    logits, scores = torch.randn(3, 6), torch.randn(3, 6)
    reference = torch.stack(
        [(torch.softmax(scores[:, : n + 1], dim=1) * logits[:, : n + 1]).sum(1) for n in range(6)], dim=1
    )
    assert torch.allclose(attention_running(logits, scores), reference, atol=1e-6)
    # The first step is the first patch's logit; one dominant score hands the slide that patch's logit.
    assert torch.allclose(attention_running(logits, scores)[:, 0], logits[:, 0])
    dominant = scores.clone()
    dominant[:, 2] = 60.0
    assert torch.allclose(attention_running(logits, dominant)[:, -1], logits[:, 2], atol=1e-5)


def test_attention_readout_weights_sum_to_one_and_the_slide_logit_follows_them() -> None:
    torch.manual_seed(0)
    classifier = Classifier("small", input_size=32, readout="attention")
    out = classifier(torch.rand(2, 4, 3, 32, 32))
    assert out.attention is not None and out.patch_logits is not None
    assert torch.allclose(out.attention.sum(1), torch.ones(2))
    assert torch.allclose(out.logit, (out.attention * out.patch_logits).sum(1), atol=1e-6)


def test_readout_is_validated() -> None:
    with pytest.raises(ConfigError, match="readout='mean'"):
        small_config(readout="mean")
    with pytest.raises(ConfigError, match="readout='mean'"):
        Classifier("small", readout="mean")


# --- strips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [2, 3])
def test_strip_masks_partition_the_map_and_alternate(heads: int) -> None:
    odd, even = strip_masks(heads, 1, 10), strip_masks(heads, 2, 10)
    for masks in (odd, even):
        assert torch.equal(masks.sum(0), torch.ones(10, 10, dtype=torch.long))  # every pixel exactly once
    # Odd layers cut along x (a strip holds whole columns), even layers along y (whole rows).
    assert bool((odd.all(dim=1) == odd.any(dim=1)).all())
    assert bool((even.all(dim=2) == even.any(dim=2)).all())
    assert torch.equal(strip_masks(1, 1, 10), torch.ones(1, 10, 10, dtype=torch.bool))
    # The offset layout lets every head see the whole map.
    layer = MagnifyingLayer(heads, small_config(patches_per_layer=(heads, 2, 2)), 1)
    assert torch.equal(layer.layout.masks, torch.ones(heads, 24, 24, dtype=torch.bool))


def test_strips_confine_each_head_and_its_box() -> None:
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 2, 2), sibling_layout="strips", head_init_std=0.5)
    layer = MagnifyingLayer(2, config, 1).eval()
    images, reads = parent_inputs(seed=3, parents=1)
    with torch.no_grad():
        out = layer(images, reads)
    inside = layer.layout.masks  # (2, V, V): left and right halves at layer 1
    assert float(out.prob[:, 0][:, ~inside[0]].abs().sum()) == 0.0
    assert float(out.prob[:, 1][:, ~inside[1]].abs().sum()) == 0.0
    assert torch.allclose(out.prob.sum(dim=(-2, -1)), torch.ones(2, 2))
    # Box centres follow the maps: child 0 on the left half, child 1 on the right (tanh keeps the sign).
    tx = out.theta[..., 1]
    assert bool((tx[:, 0] < 0).all() and (tx[:, 1] > 0).all())
    assert torch.equal(layer.layout.offsets, torch.zeros(2, 2))


def test_fixed_control_under_strips_equals_flat_strip_heads() -> None:
    config = small_config(patches_per_layer=(2, 2, 2), sibling_layout="strips", head_init_std=0.0)
    learned = MagnifyingLayer(2, config, 1).eval()
    fixed = MagnifyingLayer(2, small_config(patches_per_layer=(2, 2, 2), sibling_layout="strips",
                                            zoom="fixed"), 1).eval()
    images, reads = parent_inputs(seed=0, parents=1)
    a, b = learned(images, reads), fixed(images, reads)
    assert torch.allclose(a.theta, b.theta, atol=1e-6)
    # A flat half-map: mu_x = -/+ 1/2 (pixel-centre mean), s = sqrt(1.5 (var_x + var_y)).
    assert torch.allclose(b.theta[0, :, 1], torch.tanh(torch.tensor([-0.5, 0.5])), atol=1e-6)
    var_x, var_y = (1 - 1 / 12**2) / 12, (1 - 1 / 24**2) / 3
    assert math.isclose(float(b.theta[0, 0, 0]), math.sqrt(1.5 * (var_x + var_y)), rel_tol=1e-5)


def test_shared_heads_under_strips_place_siblings_apart_and_learn_from_head_value() -> None:
    """One network per layer (model.shared_heads): siblings read one map, their strips part their boxes, and
    the head-value loss of any final patch reaches it."""
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 2, 2), sibling_layout="strips", head_init_std=0.5,
                          frozen_patch=False, shared_heads=True, readout="lse", aux_layers=())
    model = build_model(config)
    assert all(isinstance(layer.heads, SharedLocalisationHeads) for layer in model.layers)
    assert not isinstance(build_model(small_config()).layers[0].heads, SharedLocalisationHeads)
    out = model([textured_source(seed=s) for s in range(2)], generator=torch.Generator().manual_seed(0))
    for maps in out.scores.values():  # (B, N_p * 2, V, V): siblings k = 0, 1 of each parent
        torch.testing.assert_close(maps[:, 0::2], maps[:, 1::2], rtol=0, atol=0)
    first = out.rois[0]  # (B, 2, 3, 3): the siblings' boxes at layer 1 lie in the left and right halves
    assert bool((first[:, 0, 0, 2] < 0).all() and (first[:, 1, 0, 2] > 0).all())
    losses = magnet_loss(out, torch.tensor([0.0, 1.0]),
                         LossWeights(final=0.0, aux=0.0, paradoxical=0.0, head_mil=0.0, head_value=1.0))
    losses.total.backward()
    for layer in model.layers:
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in layer.heads.parameters())


# --- head MIL ----------------------------------------------------------------------------------
def test_head_mil_needs_strips() -> None:
    with pytest.raises(ConfigError, match="head_mil=True needs sibling_layout=strips"):
        small_config(head_mil=True)
    with pytest.raises(ConfigError, match="head_mil_sharpness"):
        small_config(head_mil=True, sibling_layout="strips", head_mil_sharpness=0.0)


def test_head_mil_logit_is_the_lse_pool_of_the_raw_maps() -> None:
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 2, 2), sibling_layout="strips", head_mil=True,
                          head_init_std=0.3, head_mil_sharpness=2.0)
    layer = MagnifyingLayer(2, config, 1).eval()
    images, reads = parent_inputs(seed=1, parents=1)
    with torch.no_grad():
        layer.heads.log_temperature.fill_(1.0)  # the temperature must not enter the MIL logit
        layer.mil_bias.fill_(0.25)
        out = layer(images, reads)
        scores = layer.score_maps(images)  # (B, 2, V, V)
    # Head k's pixels are those of its strip: the two strips together are the whole map, once.
    picked = torch.stack([scores[:, k][:, layer.layout.masks[k]] for k in range(2)], dim=1).flatten(1)
    expected = torch.logsumexp(2.0 * picked, dim=1) / 2.0 - math.log(24 * 24) / 2.0 + 0.25
    assert out.head_logits is not None
    assert torch.allclose(out.head_logits, expected, atol=1e-5)


def test_head_mil_loss_reaches_the_heads() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = small_config(sibling_layout="strips", head_mil=True, aux_layers=())
    model = build_model(config)
    sources = [textured_source(seed=s) for s in range(2)]
    out = model(sources, generator=torch.Generator().manual_seed(0))
    assert sorted(out.head_logits) == [1, 2, 3]  # every layer has heads (layer 2: frozen + 1 head)
    assert all(v.shape == (2,) for v in out.head_logits.values())
    labels = torch.tensor([0.0, 1.0])
    losses = magnet_loss(out, labels)
    assert float(losses.head_mil.detach()) > 0
    # With only the head-MIL term, every layer's heads and MIL bias get a gradient, the classifier none.
    from magnet.training.losses import LossWeights

    only_mil = magnet_loss(out, labels, LossWeights(final=0.0, aux=0.0, paradoxical=0.0))
    only_mil.total.backward()
    for layer in model.layers:
        assert layer.mil_bias.grad is not None and float(layer.mil_bias.grad.abs()) > 0
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in layer.heads.parameters())
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.classifier.parameters())


def test_no_head_mil_no_term() -> None:
    model = build_model(small_config(aux_layers=()))
    out = model([textured_source(seed=0)], generator=torch.Generator().manual_seed(0))
    assert out.head_logits == {}
    assert float(magnet_loss(out, torch.tensor([1.0])).head_mil) == 0.0


# --- low-pass gradient -------------------------------------------------------------------------
def test_gaussian_blur_keeps_constants_and_mass() -> None:
    flat = torch.full((1, 3, 20, 20), 0.4)
    blurred = gaussian_blur(flat, 1.5)
    assert torch.allclose(blurred[..., 5:15, 5:15], flat[..., 5:15, 5:15], atol=1e-6)  # interior
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 10] = 1.0
    out = gaussian_blur(spike, 2.0)
    assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-5)
    assert torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.transpose(-1, -2))
    assert gaussian_blur(spike, 0.0) is spike


def test_low_pass_gradient_value_sharp_gradient_smooth() -> None:
    sharp = torch.tensor([1.0, 2.0])
    x = torch.tensor([0.5, 0.5], requires_grad=True)
    smooth = 3 * x
    out = low_pass_gradient(sharp, smooth)
    assert torch.equal(out.detach(), sharp)
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([3.0, 3.0]))


def test_theta_grad_blur_changes_only_the_gradient() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = dict(patches_per_layer=(2, 2, 2), sampler="bilinear", head_init_std=0.2)
    plain = MagnifyingLayer(2, small_config(**base), 1)
    blurred = MagnifyingLayer(2, small_config(**base, theta_grad_blur=2.0), 1)
    blurred.load_state_dict(plain.state_dict())
    plain.eval()
    blurred.eval()
    images, reads = parent_inputs(seed=5, parents=1)
    a, b = plain(images, reads), blurred(images, reads)
    assert torch.allclose(a.patches, b.patches, atol=1e-6)  # same forward value
    ga = torch.autograd.grad(a.patches.square().sum(), plain.heads.to_logits.weight)[0]
    gb = torch.autograd.grad(b.patches.square().sum(), blurred.heads.to_logits.weight)[0]
    assert not torch.allclose(ga, gb, rtol=1e-3)  # a different gradient path
    with torch.no_grad():  # no gradient wanted: one plain sample, same values
        assert torch.allclose(blurred(images, reads).patches, a.patches, atol=1e-6)


def test_head_highpass_shows_the_heads_local_contrast_only() -> None:
    torch.manual_seed(0)
    base = dict(patches_per_layer=(2, 2, 2), head_init_std=0.2)
    plain = MagnifyingLayer(2, small_config(**base), 1).eval()
    contrast = MagnifyingLayer(2, small_config(**base, head_highpass=2.0), 1).eval()
    contrast.load_state_dict(plain.state_dict())
    images, reads = parent_inputs(seed=2, parents=1)
    with torch.no_grad():
        # The heads of the high-pass layer see exactly 0.5 + I - blur(I).
        expected = plain.score_maps((0.5 + images[:, 0] - gaussian_blur(images[:, 0], 2.0))[:, None])
        assert torch.allclose(contrast.score_maps(images), expected, atol=1e-6)
        assert not torch.allclose(contrast.score_maps(images), plain.score_maps(images))
        # An overall colour shift (stain) leaves I - blur(I) unchanged away from the borders (3 sigma = 6 px).
        flat = images[:, 0]
        shifted = flat + 0.05
        shift = (shifted - gaussian_blur(shifted, 2.0)) - (flat - gaussian_blur(flat, 2.0))
        assert float(shift[..., 6:-6, 6:-6].abs().max()) < 1e-5
    with pytest.raises(ConfigError, match="head_highpass"):
        small_config(head_highpass=-1.0)


def test_random_control_draws_scales_up_to_max_scale() -> None:
    config = small_config(
        patches_per_layer=(2, 2, 2), zoom="random", max_scale=0.5, random_zoom_min_scale=0.5
    )
    layer = MagnifyingLayer(2, config, 1).eval()
    images, reads = parent_inputs(seed=0, batch=6, parents=1)
    out = layer(images, reads, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.theta[..., 0], torch.full((6, 2), 0.5))  # min = max: every box at half side
    with pytest.raises(ConfigError, match="random_zoom_min_scale"):
        small_config(max_scale=0.4, random_zoom_min_scale=0.5)


def test_theta_grad_false_leaves_the_heads_to_head_mil() -> None:
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 2, 2), sibling_layout="strips", head_mil=True,
                          theta_grad=False)
    layer = MagnifyingLayer(2, config, 1)
    images, reads = parent_inputs(seed=4, parents=1)
    out = layer(images, reads)
    assert not out.theta.requires_grad and not out.patches.requires_grad
    assert out.head_logits is not None
    out.head_logits.sum().backward()  # the MIL term still reaches the heads
    assert float(layer.heads.to_logits.weight.grad.abs().sum()) > 0
