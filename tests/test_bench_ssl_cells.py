"""``bench/ssl_cells.py``'s parts: the contrastive loss against a direct computation, the crop pairs'
geometry, the encoder's cell maps aligned with the 32-px cells, and the readout over cells
learning a planted cell."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from magnet.metrics.auroc import auroc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    from ssl_cells import CellEncoder, crop_pairs, fit_readout, jitter, novelty, nt_xent, slide_logits
finally:
    sys.path.pop(0)


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
    looks = torch.randint(0, 256, (2, 3, 64, 64), generator=generator, dtype=torch.uint8)  # no repeats
    first, second = crop_pairs(looks, 16, 4, generator)
    assert first.shape == second.shape == (16, 3, 32, 32)
    assert 0 <= first.min() and first.max() <= 1
    # the second crop's corner: find it in the same look, within 4 px of the first's
    for f, s in zip(first, second, strict=True):
        found = [
            (i, y, x)
            for i in range(2)
            for y in range(33)
            for x in range(33)
            if torch.equal(looks[i, :, y : y + 32, x : x + 32].float() / 255, f)
        ]
        assert len(found) == 1
        i, y, x = found[0]
        near = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if 0 <= y + dy <= 32
            and 0 <= x + dx <= 32
            and torch.equal(looks[i, :, y + dy : y + dy + 32, x + dx : x + dx + 32].float() / 255, s)
        ]
        assert near


def test_jitter_keeps_shape_and_range() -> None:
    crops = torch.rand(10, 3, 32, 32)
    out = jitter(crops, torch.Generator().manual_seed(1))
    assert out.shape == crops.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, crops)


def test_cell_maps_give_one_feature_per_32_px_cell() -> None:
    encoder = CellEncoder(width=16).eval()
    looks = torch.rand(2, 3, 224, 224)
    maps = encoder.cell_maps(looks)
    assert maps.shape == (2, 16, 7, 7)
    # a change inside cell (row 3, column 5) moves that cell's feature most
    changed = looks.clone()
    changed[:, :, 3 * 32 + 8 : 3 * 32 + 24, 5 * 32 + 8 : 5 * 32 + 24] = 0
    delta = (encoder.cell_maps(changed) - maps).abs().sum((0, 1))
    assert delta.argmax().item() == 3 * 7 + 5


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_readout_over_cells_finds_a_planted_cell_and_novelty_ranks_it(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)

    def slides(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        cells = torch.randn(n, 50, 8, generator=generator)
        labels = (torch.arange(n) % 2).float()
        cells[labels == 1, 7, 0] += 6.0  # one cell per positive slide stands out on feature 0
        return cells, labels

    train, train_y = slides(60)
    val, val_y = slides(20)
    head, best = fit_readout(train, train_y, val, val_y, epochs=30, seed=0, lr=1e-2, kind=kind)
    assert best > 0.95
    test, test_y = slides(20)
    logits = slide_logits(head, test, 5.0)
    assert auroc(test_y.numpy(), logits.detach().numpy()) > 0.95
    reference = train[train_y == 0].reshape(-1, 8)
    scores = novelty(reference, test, k=3, top=1)
    assert scores[test_y == 1].mean() > scores[test_y == 0].mean()
