"""A constant CNN prepared (batch norms folded, channels-last) computes what it computed, and a classifier
with a frozen CNN uses such a copy without it leaking into training, checkpoints or loaded weights."""

from __future__ import annotations

import copy

import pytest
import torch
from batch_norms import count_modules, randomise_batch_norms
from torch import nn

from magnet.models.backbones import build_backbone
from magnet.models.classifier import Classifier
from magnet.models.constant_cnn import PreparedCopy, fold_batch_norms


@pytest.mark.parametrize("name", ["small", "resnet18", "efficientnet_lite0", "inception_v3"])
def test_folding_every_backbone_removes_its_batch_norms_and_keeps_its_function(name: str) -> None:
    encoder = build_backbone(name).encoder.eval()
    randomise_batch_norms(encoder)
    images = torch.rand(2, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = encoder(images)
        folded = fold_batch_norms(encoder)
        got = folded(images)
    assert count_modules(encoder, nn.BatchNorm2d) > 0  # the original is untouched
    assert count_modules(folded, nn.BatchNorm2d) == 0
    scale = expected.abs().max().clamp_min(1.0)
    assert ((got - expected).abs().max() / scale).item() < 1e-4
    with torch.no_grad():
        assert torch.equal(encoder(images), expected)


def test_only_a_batch_norm_fed_by_a_convolution_alone_is_folded() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)

    class Shared(nn.Module):  # the convolution's output is read twice: folding would change the residual
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = conv, nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(y) + y

    for network in (nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), Shared()):
        network.eval()
        randomise_batch_norms(network)
        images = torch.rand(1, 3, 8, 8)
        folded = fold_batch_norms(network)
        assert count_modules(folded, nn.BatchNorm2d) == 1
        with torch.no_grad():
            assert torch.allclose(folded(images), network(images), atol=1e-6)


def test_folding_a_network_in_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="evaluation mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)))


def _frozen_classifier(seed: int = 0) -> Classifier:
    """A classifier whose frozen CNN has non-trivial batch norms (no weights are loaded: none are needed)."""
    torch.manual_seed(seed)
    classifier = Classifier("small", input_size=32, readout="lse")
    randomise_batch_norms(classifier.backbone, seed)
    classifier.frozen = True  # as model.freeze_backbone does after loading pretrained weights
    classifier.backbone.requires_grad_(False).eval()
    return classifier


def _unprepared(classifier: Classifier) -> Classifier:
    plain = copy.deepcopy(classifier)
    plain.frozen = False
    return plain.train(classifier.training)


def test_frozen_classifier_gives_the_features_and_input_gradients_of_its_plain_cnn() -> None:
    classifier = _frozen_classifier().train()
    plain = _unprepared(classifier)
    plain.backbone.eval()
    patches = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    outputs = []
    for model in (classifier, plain):
        x = patches.clone().requires_grad_(True)
        out = model(x)
        out.logit.sum().backward()
        outputs.append(out.running_logits.detach())
        grads.append(x.grad)
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6)
    # The frozen CNN learns nothing; the head above it does.
    assert all(p.grad is None for p in classifier.backbone.parameters())
    assert all(p.grad is not None for p in classifier.head.parameters())


def test_the_prepared_copy_is_not_in_the_state_dict_and_follows_loaded_weights() -> None:
    classifier = _frozen_classifier(seed=0)
    other = _frozen_classifier(seed=5)
    assert classifier.state_dict().keys() == _unprepared(classifier).state_dict().keys()
    patches = torch.rand(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = classifier(patches).logit
        classifier.load_state_dict(other.state_dict())  # a checkpoint's weights, written in place
        after = classifier(patches).logit
        expected = _unprepared(other).eval()(patches).logit
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, rtol=1e-4, atol=1e-5)


def test_a_prepared_copy_is_made_once_while_the_weights_stand_still() -> None:
    network = build_backbone("small").eval()
    cache = PreparedCopy()
    first = cache.of(network)
    assert cache.of(network) is first
    with torch.no_grad():
        next(network.parameters()).add_(1.0)  # any in-place change is a new version
    assert cache.of(network) is not first
    assert count_modules(cache.of(network), nn.BatchNorm2d) == 0
    assert count_modules(network, nn.BatchNorm2d) > 0  # the network itself is left as it was
