"""Inception blocks (Szegedy et al.) run as grouped convolutions, and the localisation heads built on them."""

from __future__ import annotations

import pytest
import torch

from magnet.errors import ConfigError
from magnet.layers import InceptionBlock, LocalisationHeads, spatial_sparsemax, theta_from_probability
from magnet.layers.heads import SharedLocalisationHeads


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("height", "width"), [(14, 14), (9, 16)])
def test_inception_block_keeps_spatial_size(height: int, width: int) -> None:
    block = InceptionBlock(in_channels=3, branch_channels=4, groups=2)
    assert block.out_channels == 2 * 4 * 4
    out = block(torch.rand(2, 6, height, width, generator=seeded()))
    assert out.shape == (2, 32, height, width)
    assert (out >= 0).all()  # every branch ends in a ReLU


def test_inception_groups_are_independent_and_group_major() -> None:
    torch.manual_seed(0)
    groups, in_channels, branch = 3, 2, 4
    block = InceptionBlock(in_channels, branch, groups=groups).eval()  # eval: BN uses running stats
    x = torch.rand(2, groups * in_channels, 12, 12, generator=seeded())
    out = block(x)
    perturbed = x.clone()
    perturbed[:, :in_channels] += torch.rand(2, in_channels, 12, 12, generator=seeded(1))  # group 0 only
    out_perturbed = block(perturbed)
    per_group = 4 * branch
    assert not torch.allclose(out_perturbed[:, :per_group], out[:, :per_group])
    torch.testing.assert_close(out_perturbed[:, per_group:], out[:, per_group:], rtol=0, atol=0)


def test_grouped_block_equals_separate_blocks() -> None:
    """Group g of a grouped block computes exactly a single block holding group g's weights."""
    torch.manual_seed(0)
    groups, in_channels, branch = 2, 3, 2
    grouped = InceptionBlock(in_channels, branch, groups=groups).eval()
    x = torch.rand(1, groups * in_channels, 10, 10, generator=seeded())
    out = grouped(x)
    for g in range(groups):
        single = InceptionBlock(in_channels, branch, groups=1).eval()
        for (name, p_single), (_, p_grouped) in zip(
            single.state_dict().items(), grouped.state_dict().items(), strict=True
        ):
            if p_single.dim() == 0:  # num_batches_tracked
                continue
            share = p_grouped.shape[0] // groups
            p_single.copy_(p_grouped[g * share : (g + 1) * share])
            assert p_single.shape == p_grouped[:share].shape, name
        expected = single(x[:, g * in_channels : (g + 1) * in_channels])
        torch.testing.assert_close(out[:, g * 4 * branch : (g + 1) * 4 * branch], expected)


def test_blocks_stack() -> None:
    first, second = InceptionBlock(3, 4, groups=2), InceptionBlock(16, 4, groups=2)
    assert second(first(torch.rand(1, 6, 8, 8))).shape == (1, 32, 8, 8)


def test_heads_output_shape_and_near_flat_start() -> None:
    torch.manual_seed(0)
    heads = LocalisationHeads(num_heads=3, branch_channels=4)
    image = torch.rand(2, 3, 28, 28, generator=seeded())
    logits = heads(image).logits
    assert logits.shape == (2, 3, 28, 28)
    # Tiny init (docs/method.md §2.4): logits are O(1e-3); the sparsemax support is not full (the logits vary
    # by more than 1/(H W)) but it is spread over the whole map, so theta starts near the identity view.
    assert logits.abs().max() < 0.05
    probabilities = spatial_sparsemax(logits)
    assert ((probabilities > 0).float().mean(dim=(-2, -1)) > 0.1).all()
    theta = theta_from_probability(probabilities)
    assert ((theta[..., 0] > 0.85) & (theta[..., 0] < 1.1)).all()
    assert theta[..., 1:].abs().max() < 0.15
    # A large init falls into the collapse trap: near one-hot maps, s on its 0.05 floor.
    torch.manual_seed(0)
    collapsed = theta_from_probability(spatial_sparsemax(LocalisationHeads(3, init_std=10.0)(image).logits))
    assert (collapsed[..., 0] < 0.2).all()


def test_heads_last_conv_init_and_temperature() -> None:
    torch.manual_seed(0)
    heads = LocalisationHeads(num_heads=4, branch_channels=8, init_std=1e-3)
    assert heads.to_logits is not None and heads.to_logits.bias is not None
    assert heads.to_logits.weight.std().item() == pytest.approx(1e-3, rel=0.2)
    assert torch.equal(heads.to_logits.bias, torch.zeros(4))
    assert heads.log_temperature is not None and torch.equal(heads.log_temperature.data, torch.zeros(4))
    image = torch.rand(1, 3, 12, 12, generator=seeded())
    before = heads(image)
    torch.testing.assert_close(before.logits, before.scores)  # beta = 0: the temperature is 1
    with torch.no_grad():
        heads.log_temperature[1] = 1.0
    after = heads(image)
    torch.testing.assert_close(after.logits[:, 1], before.logits[:, 1] * torch.e)
    torch.testing.assert_close(after.logits[:, [0, 2, 3]], before.logits[:, [0, 2, 3]])
    torch.testing.assert_close(after.scores, before.scores)  # the raw scores never see the temperature
    fixed = LocalisationHeads(num_heads=2, learn_temperature=False)
    assert fixed.log_temperature is None
    assert all("temperature" not in name for name, _ in fixed.named_parameters())


def test_heads_are_independent() -> None:
    torch.manual_seed(0)
    heads = LocalisationHeads(num_heads=3, branch_channels=4, init_std=0.1).eval()
    image = torch.rand(1, 3, 16, 16, generator=seeded())
    baseline = heads(image).logits
    with torch.no_grad():  # change only head 1's weights in every layer
        for module in heads.modules():
            if isinstance(module, torch.nn.Conv2d):
                share = module.weight.shape[0] // 3
                module.weight[share : 2 * share] += 0.5
    changed = heads(image).logits
    assert not torch.allclose(changed[:, 1], baseline[:, 1])
    torch.testing.assert_close(changed[:, [0, 2]], baseline[:, [0, 2]], rtol=0, atol=0)


def test_every_head_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    heads = LocalisationHeads(num_heads=2, branch_channels=4, num_blocks=2)
    logits = heads(torch.rand(2, 3, 12, 12, generator=seeded())).logits
    (logits * torch.randn(logits.shape, generator=seeded(1))).sum().backward()
    for name, parameter in heads.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_zero_heads_is_allowed_and_empty() -> None:
    heads = LocalisationHeads(num_heads=0)
    assert list(heads.parameters()) == []
    out = heads(torch.rand(2, 3, 8, 8))
    assert out.scores.shape == (2, 0, 8, 8) and out.logits.shape == (2, 0, 8, 8)
    assert heads(torch.rand(2, 4, 3, 8, 8)).logits.shape == (2, 0, 8, 8)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        LocalisationHeads(num_heads=-1)
    with pytest.raises(ConfigError, match="num_blocks"):
        LocalisationHeads(num_heads=1, num_blocks=0)
    with pytest.raises(ConfigError, match="groups"):
        InceptionBlock(3, 4, groups=0)
    with pytest.raises(ValueError, match="expected parent images"):
        LocalisationHeads(num_heads=1, in_channels=3)(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="do not split evenly"):
        LocalisationHeads(num_heads=3)(torch.zeros(1, 2, 3, 8, 8))


def test_each_parent_feeds_its_own_heads() -> None:
    """Images (B, N_p, C, H, W): head n * K + k sees parent n only, as the layer's children are numbered."""
    torch.manual_seed(0)
    heads = LocalisationHeads(num_heads=4, branch_channels=4, init_std=0.1).eval()  # 2 parents x 2 heads
    parents = torch.rand(2, 2, 3, 10, 10, generator=seeded())
    maps = heads(parents)
    assert maps.scores.shape == (2, 4, 10, 10)
    for n in range(2):
        alone = heads(parents[:, n])  # a 4-D image: every head sees it
        torch.testing.assert_close(maps.logits[:, 2 * n : 2 * n + 2], alone.logits[:, 2 * n : 2 * n + 2])
        torch.testing.assert_close(maps.scores[:, 2 * n : 2 * n + 2], alone.scores[:, 2 * n : 2 * n + 2])


# --- one network for all the heads of a layer (model.shared_heads) ----------------------------------------
def test_shared_heads_give_siblings_one_map_per_parent() -> None:
    torch.manual_seed(0)
    heads = SharedLocalisationHeads(6, in_channels=3, branch_channels=4, init_std=0.5).eval()
    images = torch.rand(2, 3, 3, 16, 16, generator=seeded())  # 2 slides, 3 parents: 2 heads per parent
    out = heads(images)
    assert out.scores.shape == (2, 6, 16, 16)
    for parent in range(3):
        torch.testing.assert_close(out.scores[:, 2 * parent], out.scores[:, 2 * parent + 1], rtol=0, atol=0)
    assert not torch.allclose(out.scores[:, 0], out.scores[:, 2])  # another parent, another map
    # The map of a parent is the network's map of that image alone, whatever the other parents show.
    alone = heads(images[:, 1]).scores  # (2, 6, 16, 16): one parent seen by every head
    torch.testing.assert_close(alone[:, 0], out.scores[:, 2])


def test_shared_heads_weights_do_not_grow_with_the_heads() -> None:
    few = SharedLocalisationHeads(2, branch_channels=4)
    many = SharedLocalisationHeads(18, branch_channels=4)
    one = LocalisationHeads(1, branch_channels=4, learn_temperature=False)
    network = sum(p.numel() for p in one.parameters())
    assert sum(p.numel() for p in few.parameters()) == network + 2  # + one temperature per head
    assert sum(p.numel() for p in many.parameters()) == network + 18
    assert SharedLocalisationHeads(0).to_logits is None


def test_shared_heads_learn_from_every_head() -> None:
    """A loss on one head's map reaches every head's weights when they are shared, and only that head's
    group when they are independent."""
    images = torch.rand(1, 2, 3, 12, 12, generator=seeded())
    torch.manual_seed(0)
    independent = LocalisationHeads(4, branch_channels=4, init_std=0.5)
    independent(images).scores[:, 3].sum().backward()
    assert independent.to_logits is not None and independent.to_logits.weight.grad is not None
    per_head = independent.to_logits.weight.grad.flatten(1).abs().sum(1)  # (4,): one row per head
    assert float(per_head[3]) > 0 and torch.equal(per_head[:3], torch.zeros(3))
    torch.manual_seed(0)
    shared = SharedLocalisationHeads(4, branch_channels=4, init_std=0.5)
    shared(images).scores[:, 3].sum().backward()
    assert shared.to_logits is not None and shared.to_logits.weight.grad is not None
    assert shared.to_logits.weight.shape[0] == 1 and float(shared.to_logits.weight.grad.abs().sum()) > 0
