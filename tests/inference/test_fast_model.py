"""The inference copy (batch norms folded, channels-last classifier) computes what the model computes."""

from __future__ import annotations

import pytest
import torch
from batch_norms import count_modules, randomise_batch_norms
from torch import nn

from magnet.inference.fast_model import inference_copy
from magnet.models import build_model
from magnet.slides.tensor_source import TensorRegionSource


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
                                       {"sibling_layout": "tissue_strips"}, {"readout": "attention"},
                                       {"sibling_layout": "tissue_strips", "shared_heads": True},
                                       {"readout": "lse", "recentre": True},
                                       {"readout": "lse", "readout_instances": "cells"},
                                       {"readout": "attention", "readout_instances": "cells",
                                        "backbone": "efficientnet_lite0", "classifier_input_size": 64}])
def test_inference_copy_predicts_what_the_model_predicts_and_leaves_it_alone(overrides: dict) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", **overrides)
    randomise_batch_norms(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    assert model.training and not fast.training
    assert count_modules(fast.classifier, nn.BatchNorm2d) == 0
    assert all(count_modules(layer.heads.blocks, nn.BatchNorm2d) == 0 for layer in fast.layers)
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
