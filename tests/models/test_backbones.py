"""Backbones and classifiers (paper §3.2-3.3): feature sizes, running logits, offline pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magnet.errors import ConfigError
from magnet.models import AuxiliaryClassifier, Classifier
from magnet.models import backbones as backbones_module
from magnet.models.backbones import build_backbone, weights_path


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
