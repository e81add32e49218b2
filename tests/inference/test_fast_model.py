"""The inference copy (batch norms folded, channels-last classifier) computes what the model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from magnet.inference.fast_model import fold_batch_norms, inference_copy
from magnet.models import build_model
from magnet.models.backbones import build_backbone
from magnet.slides.tensor_source import TensorRegionSource


def _randomise_batch_norms(network: nn.Module, seed: int = 0) -> None:
    """Statistics and affine weights far from the identity, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.3, 3.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)


def _count(network: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in network.modules())


@pytest.mark.parametrize("name", ["small", "resnet18", "efficientnet_lite0", "inception_v3"])
def test_folding_every_backbone_removes_its_batch_norms_and_keeps_its_function(name: str) -> None:
    encoder = build_backbone(name).encoder.eval()
    _randomise_batch_norms(encoder)
    images = torch.rand(2, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = encoder(images)
        folded = fold_batch_norms(encoder)
        got = folded(images)
    assert _count(encoder, nn.BatchNorm2d) > 0  # the original is untouched
    assert _count(folded, nn.BatchNorm2d) == 0
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
        _randomise_batch_norms(network)
        images = torch.rand(1, 3, 8, 8)
        folded = fold_batch_norms(network)
        assert _count(folded, nn.BatchNorm2d) == 1
        with torch.no_grad():
            assert torch.allclose(folded(images), network(images), atol=1e-6)


def test_folding_a_network_in_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="evaluation mode"):
        fold_batch_norms(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)))


def test_forward_without_auxiliary_classifiers_gives_the_same_prediction() -> None:
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    sources = [TensorRegionSource(torch.rand(3, 512, 512))]
    with torch.no_grad():
        full = model(sources)
        lean = model(sources, auxiliary=False)
    assert set(full.aux_logits) == {1, 3} and lean.aux_logits == {}
    assert torch.equal(full.logit, lean.logit)
    assert all(torch.equal(a, b) for a, b in zip(full.rois, lean.rois, strict=True))


@pytest.mark.parametrize("overrides", [{}, {"backbone": "inception_v3", "classifier_input_size": 80},
                                       {"sibling_layout": "tissue_strips"}])
def test_inference_copy_predicts_what_the_model_predicts_and_leaves_it_alone(overrides: dict) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", **overrides)
    _randomise_batch_norms(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    assert model.training and not fast.training
    assert _count(fast.classifier, nn.BatchNorm2d) == 0
    assert all(_count(layer.heads.blocks, nn.BatchNorm2d) == 0 for layer in fast.layers)
    sources = [TensorRegionSource(torch.rand(3, 512, 512, generator=torch.Generator().manual_seed(s)))
               for s in range(2)]
    model.eval()
    with torch.no_grad():
        expected = model(sources, auxiliary=False)
        got = fast(sources, auxiliary=False)
    assert torch.allclose(torch.sigmoid(got.logit), torch.sigmoid(expected.logit), atol=1e-5)
    assert torch.allclose(got.running_logits, expected.running_logits, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(got.rois, expected.rois, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bfloat16_copy_moves_only_the_classifier() -> None:
    torch.manual_seed(0)
    model = build_model("tiny")
    sources = [TensorRegionSource(torch.rand(3, 512, 512, generator=torch.Generator().manual_seed(3)))]
    with torch.no_grad():
        full = inference_copy(model)(sources, auxiliary=False)
        half = inference_copy(model, "bf16")(sources, auxiliary=False)
    assert half.logit.dtype == torch.float32
    # The heads and the sampler stay float32: the same boxes, bit for bit.
    assert all(torch.equal(a, b) for a, b in zip(half.rois, full.rois, strict=True))
    # bfloat16 keeps 8 bits of mantissa: the probability moves, but by its rounding only.
    assert (torch.sigmoid(half.logit) - torch.sigmoid(full.logit)).abs().max().item() < 0.05


def test_an_unknown_precision_is_refused_in_one_line() -> None:
    from magnet.errors import ConfigError

    with pytest.raises(ConfigError, match="precision='fp16': must be one of fp32, bf16"):
        inference_copy(build_model("tiny"), "fp16")
