"""magnet_loss (paper §4.3; docs/method.md §4): BCE terms, weights, and the paradoxical hinge."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from magnet.errors import ConfigError
from magnet.models import MagNetOutput
from magnet.training.losses import LossWeights, magnet_loss, paradoxical_loss


def fake_output(final: list[float], aux: dict[int, list[float]]) -> MagNetOutput:
    logit = torch.tensor(final, requires_grad=True)
    return MagNetOutput(
        logit=logit,
        running_logits=logit.unsqueeze(1),
        aux_logits={k: torch.tensor(v, requires_grad=True) for k, v in aux.items()},
    )


def test_terms_and_weights() -> None:
    labels = torch.tensor([0, 1, 1])
    out = fake_output([0.5, -1.0, 2.0], {1: [0.1, 0.2, 0.3], 3: [-0.4, 0.9, 0.0]})
    loss = magnet_loss(out, labels, LossWeights(final=2.0, aux=0.5, paradoxical=3.0))
    y = labels.float()
    final = F.binary_cross_entropy_with_logits(out.logit, y)
    aux1 = F.binary_cross_entropy_with_logits(out.aux_logits[1], y)
    aux3 = F.binary_cross_entropy_with_logits(out.aux_logits[3], y)
    par = paradoxical_loss(out.aux_logits[1], out.aux_logits[3], y)
    assert (
        torch.allclose(loss.final, final)
        and torch.allclose(loss.aux[1], aux1)
        and torch.allclose(loss.aux[3], aux3)
    )
    assert torch.allclose(loss.total, 2 * final + 0.5 * (aux1 + aux3) + 3 * par)


def test_paradoxical_hinge_is_per_slide_and_detaches_the_first_layer() -> None:
    y = torch.tensor([1.0, 1.0])
    first = torch.tensor([2.0, -2.0], requires_grad=True)  # slide 0 good at layer 1, slide 1 bad
    last = torch.tensor([0.0, 0.0], requires_grad=True)
    value = paradoxical_loss(first, last, y)
    l1 = F.binary_cross_entropy_with_logits(first, y, reduction="none")
    l3 = F.binary_cross_entropy_with_logits(last, y, reduction="none")
    assert torch.allclose(value, torch.relu(l3 - l1).mean())
    value.backward()
    assert first.grad is None or first.grad.abs().max() == 0  # sg(l1): no reward for a worse layer 1
    assert last.grad is not None and last.grad[0] != 0 and last.grad[1] == 0  # only where l3 > l1


def test_fewer_than_two_aux_layers_means_no_paradoxical_term() -> None:
    labels = torch.tensor([1, 0])
    loss = magnet_loss(fake_output([0.3, 0.1], {1: [0.0, 0.0]}), labels)
    assert loss.paradoxical.item() == 0 and set(loss.aux) == {1}
    none = magnet_loss(fake_output([0.3, 0.1], {}), labels)
    assert torch.allclose(none.total, none.final)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="paradoxical=-1"):
        LossWeights(paradoxical=-1)
    with pytest.raises(ValueError, match="labels"):
        magnet_loss(fake_output([0.3, 0.1], {}), torch.tensor([1, 0, 1]))
