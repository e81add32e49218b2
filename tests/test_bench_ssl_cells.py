"""``bench/ssl_cells.py``'s readout over cells learning a planted cell, and its novelty score ranking it
(the encoder and its contrastive training are the library's: tests/training/test_contrastive.py,
tests/models/test_cell_encoder.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from magnet.metrics.auroc import auroc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    from ssl_cells import fit_readout, novelty, slide_logits
finally:
    sys.path.pop(0)


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
