"""Contrastive pre-training of the cell encoder (``magnet.training.contrastive``): the loss against a direct
sum, the crop pairs' geometry, the views' range, and a short training that learns to pair crops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from magnet.training.contrastive import ContrastiveSettings, crop_pairs, jitter, nt_xent, train_cell_encoder


def test_nt_xent_matches_a_direct_sum_over_each_embeddings_others() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    z = F.normalize(torch.cat([a, b]), dim=1)
    total = 0.0
    for i in range(6):
        positive = (i + 3) % 6
        others = [j for j in range(6) if j != i]
        denominator = sum(math.exp(float(z[i] @ z[j]) / 0.5) for j in others)
        total += -(float(z[i] @ z[positive]) / 0.5 - math.log(denominator))
    assert abs(nt_xent(a, b, 0.5).item() - total / 6) < 1e-5


def test_nt_xent_is_lower_when_pairs_agree() -> None:
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    assert nt_xent(a, a + 0.01 * torch.randn(8, 16), 0.2) < nt_xent(a, torch.randn(8, 16), 0.2)


def test_crop_pairs_lie_within_the_shift_of_each_other() -> None:
    generator = torch.Generator().manual_seed(0)
    patches = torch.randint(0, 256, (2, 3, 64, 64), generator=generator, dtype=torch.uint8)  # no repeats
    first, second = crop_pairs(patches, 16, 4, generator)
    assert first.shape == second.shape == (16, 3, 32, 32)
    assert 0 <= first.min() and first.max() <= 1
    for f, s in zip(first, second, strict=True):  # each crop found in its patch, its pair's within 4 px
        found = [(i, y, x) for i in range(2) for y in range(33) for x in range(33)
                 if torch.equal(patches[i, :, y:y + 32, x:x + 32].float() / 255, f)]
        assert len(found) == 1
        i, y, x = found[0]
        assert any(0 <= y + dy <= 32 and 0 <= x + dx <= 32
                   and torch.equal(patches[i, :, y + dy:y + dy + 32, x + dx:x + dx + 32].float() / 255, s)
                   for dy in range(-4, 5) for dx in range(-4, 5))


def test_crop_pairs_refuse_patches_too_small_for_the_shift() -> None:
    with pytest.raises(ValueError, match="too small for 32-px crops 8 px apart"):
        crop_pairs(torch.zeros(1, 3, 40, 40, dtype=torch.uint8), 4, 8, torch.Generator())


def test_jitter_keeps_shape_and_range_and_changes_the_crops() -> None:
    crops = torch.rand(10, 3, 32, 32)
    out = jitter(crops, torch.Generator().manual_seed(1))
    assert out.shape == crops.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, crops)


def striped_patches(seed: int) -> torch.Tensor:
    """Patches of random colours and stripe periods: crops of one patch are alike, of two patches not."""
    generator = torch.Generator().manual_seed(seed)
    n = 24
    colours = torch.rand(n, 3, 1, 1, generator=generator)
    period = torch.randint(3, 12, (n, 1, 1, 1), generator=generator).float()
    rows = torch.arange(64).view(1, 1, 64, 1).float()
    stripes = (torch.sin(rows / period * math.pi) > 0).float()
    return ((colours * (0.5 + 0.5 * stripes)).expand(n, 3, 64, 64) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_short_training_learns_to_pair_crops_and_repeats(seed: int) -> None:
    patches = striped_patches(seed)
    settings = ContrastiveSettings(steps=40, batch=32, shift=4, lr=5e-3, seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise repeatable on one thread
    try:
        encoder, losses = train_cell_encoder(patches, settings)
        again, losses_again = train_cell_encoder(patches, settings)
    finally:
        torch.set_num_threads(threads)
    chance = math.log(2 * settings.batch - 1)  # 4.14; seeds 0-5 end at 1.4-1.7, start at 3.4-3.7
    assert sum(losses[-10:]) / 10 < min(chance - 1.5, losses[0] - 1.0)
    assert not encoder.training
    assert losses_again == losses
    assert all(torch.equal(p, q) for p, q in zip(encoder.state_dict().values(),
                                                 again.state_dict().values(), strict=True))
