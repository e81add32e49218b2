"""MagnifyingLayer: a head per output patch, sibling offsets, frozen patch, patches (docs/method.md §2)."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import textured_image

from magnet.errors import ConfigError
from magnet.models import MagnifyingLayer, model_config, sibling_offsets


def small_config(**overrides: object):
    base = dict(view_size=24, read_size=48, final_size=32, final_read_size=64, classifier_input_size=32)
    base.update(overrides)
    return model_config("tiny", **base)


def test_one_head_per_output_patch_minus_frozen() -> None:
    config = small_config(patches_per_layer=(2, 3, 3))
    layers = [MagnifyingLayer(p, config, i + 1) for i, p in enumerate(config.patches_per_layer)]
    # Layer 1: 2 heads; layer 2: 2 parents x (3 - 1 frozen); layer 3: 6 parents x 3.
    assert [layer.num_heads for layer in layers] == [2, 4, 18]
    assert [layer.out_size for layer in layers] == [24, 24, 32]
    no_frozen = small_config(patches_per_layer=(2, 3, 3), frozen_patch=False)
    assert MagnifyingLayer(3, no_frozen, 2).num_heads == 6


def test_sibling_offsets_are_distinct_and_inside() -> None:
    for heads in (2, 3, 4):
        for layer in (1, 2, 3):
            offsets = sibling_offsets(heads, 0.4, layer, has_frozen=False)
            assert offsets.shape == (heads, 2)
            assert offsets.abs().max() <= 0.4 + 1e-6
            assert torch.cdist(offsets, offsets).add(torch.eye(heads)).min() > 0.1
    assert torch.equal(sibling_offsets(1, 0.4, 1, has_frozen=False), torch.zeros(1, 2))
    # Beside a frozen (centred) sibling, a lone headed child is pushed off-centre.
    assert sibling_offsets(1, 0.4, 2, has_frozen=True).abs().min() > 0.1
    # Two children: the diagonal at layer 1; later layers turn, so paths of offsets do not cancel.
    one, three = sibling_offsets(2, 0.4, 1, False), sibling_offsets(2, 0.4, 3, False)
    assert torch.allclose(one[0], torch.tensor([0.4, 0.4]))
    sums = (one[:, None, :] + three[None, :, :]).view(-1, 2)
    assert torch.cdist(sums, sums).add(torch.eye(4)).min() > 0.1


def test_frozen_child_is_identity_and_siblings_differ() -> None:
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 3, 2))
    layer = MagnifyingLayer(3, config, 2).eval()
    images = textured_image(24, 24).expand(2, 2, 3, 24, 24).contiguous()
    reads = textured_image(48, 48).expand(2, 2, 3, 48, 48).contiguous()
    out = layer(images, reads)
    assert out.theta.shape == (2, 6, 3) and out.patches.shape == (2, 6, 3, 24, 24)
    assert out.prob.shape == (2, 4, 24, 24) and out.support.shape == (2, 4)
    frozen = out.theta.view(2, 2, 3, 3)[:, :, 0]
    assert torch.equal(frozen, torch.tensor([1.0, 0.0, 0.0]).expand_as(frozen))
    # The frozen patch is the parent's whole I' resampled onto the view grid.
    whole = torch.nn.functional.interpolate(reads[0, :1], size=24, mode="bilinear", align_corners=False)
    assert torch.allclose(out.patches[0, 0], whole[0], atol=1e-5)
    centres = out.theta.view(2, 2, 3, 3)[0, 0, :, 1:]
    assert torch.cdist(centres, centres).add(torch.eye(3)).min() > 0.1
    assert torch.allclose(out.prob.sum((-2, -1)), torch.ones(2, 4), atol=1e-5)


def test_each_parent_feeds_only_its_own_heads() -> None:
    torch.manual_seed(0)
    config = small_config(patches_per_layer=(2, 2, 2), head_init_std=0.5)
    layer = MagnifyingLayer(2, config, 3).eval()  # 4 parents x 2 heads
    images = torch.stack([textured_image(24, 24, seed=s) for s in range(4)]).unsqueeze(0)  # (1, 4, 3, 24, 24)
    per_parent = layer.head_maps(images).logits  # head 2n + k sees parent n
    everyone = torch.stack(
        [layer.heads(images[:, n]).logits for n in range(4)], dim=1
    )  # (1, 4 parents, 8 heads, ...): every head on parent n
    for n in range(4):
        assert torch.allclose(per_parent[0, 2 * n : 2 * n + 2], everyone[0, n, 2 * n : 2 * n + 2], atol=1e-5)


def test_bad_layer_index() -> None:
    with pytest.raises(ConfigError, match="layer_index"):
        MagnifyingLayer(2, small_config(), 4)
