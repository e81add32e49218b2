"""The cell encoder as a classifier backbone (``model.backbone: cell_encoder``): cells aligned with the
32-px squares of a patch, weights read from a ``magnet pretrain`` file (and refused with a one-line error
naming any other file), the frozen classifier's prepared maps equal to the encoder's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_fixtures import small_config

from magnet.errors import ConfigError
from magnet.models import Classifier
from magnet.models.backbones import CellMap, build_backbone
from magnet.models.cell_encoder import CELL_ENCODER_WIDTH, ENCODER_FILE_KIND, CellEncoder
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig


def weights_file(path: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """A weights file as ``magnet pretrain`` writes it, of an encoder with random weights and statistics."""
    torch.manual_seed(seed)
    encoder = CellEncoder()
    for module in encoder.modules():  # batch-norm statistics away from their defaults, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = encoder.state_dict()
    torch.save({"kind": ENCODER_FILE_KIND, "width": CELL_ENCODER_WIDTH, "state_dict": state}, path)
    return path, state


def test_cell_maps_give_one_feature_per_32_px_cell_and_pool_to_the_features() -> None:
    encoder = CellEncoder(width=16).eval()
    patches = torch.rand(2, 3, 224, 224)
    maps = encoder.feature_map(patches)
    assert maps.shape == (2, 16, 7, 7)
    assert torch.allclose(encoder(patches), maps.mean((2, 3)))
    changed = patches.clone()  # a change inside cell (row 3, column 5) moves that cell's feature most
    changed[:, :, 3 * 32 + 8:3 * 32 + 24, 5 * 32 + 8:5 * 32 + 24] = 0
    delta = (encoder.feature_map(changed) - maps).abs().sum((0, 1))
    assert delta.argmax().item() == 3 * 7 + 5


def test_the_backbone_loads_the_pretrained_file(tmp_path: Path) -> None:
    path, state = weights_file(tmp_path / "encoder.pt")
    backbone = build_backbone("cell_encoder", pretrained=True, weights=str(path))
    assert backbone.feature_dim == CELL_ENCODER_WIDTH
    assert all(torch.equal(backbone.encoder.state_dict()[k], v) for k, v in state.items())
    unread = build_backbone("cell_encoder", pretrained=True, load_weights=False, weights=str(tmp_path / "no"))
    assert not torch.equal(unread.encoder.state_dict()["trunk.0.weight"], state["trunk.0.weight"])


def test_a_missing_or_foreign_weights_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(ConfigError, match=f"{missing}: no such cell-encoder weights file"):
        build_backbone("cell_encoder", pretrained=True, weights=str(missing))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    for path in (foreign, garbage):
        with pytest.raises(ConfigError, match=f"{path}: not a cell-encoder weights file") as error:
            build_backbone("cell_encoder", pretrained=True, weights=str(path))
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"backbone": "small", "backbone_weights": "e.pt"}, "'e.pt' is for backbone=cell_encoder"),
    ({"backbone": "cell_encoder", "pretrained": True}, "needs backbone_weights"),
])
def test_config_pairs_weights_with_the_cell_encoder(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MagNetConfig(**overrides)


def test_frozen_classifier_reads_the_encoders_cells_through_its_prepared_copy(tmp_path: Path) -> None:
    path, _ = weights_file(tmp_path / "encoder.pt")
    classifier = Classifier("cell_encoder", input_size=64, pretrained=True, readout="lse", frozen=True,
                            instances="cells", weights=str(path)).train()
    patches = torch.rand(2, 3, 3, 64, 64)
    maps = classifier.features(patches)
    assert maps.shape == (2, 3, CELL_ENCODER_WIDTH, 2, 2)
    with torch.no_grad():
        direct = CellMap(classifier.backbone)(patches.flatten(0, 1))
    assert torch.allclose(maps.flatten(0, 1), direct, atol=1e-5)
    backbone = classifier.backbone
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())


def test_a_checkpointed_model_loads_without_the_weights_file(tmp_path: Path) -> None:
    path, state = weights_file(tmp_path / "encoder.pt")
    config = small_config(backbone="cell_encoder", pretrained=True, freeze_backbone=True,
                          backbone_weights=str(path), aux_layers=())
    saved = MagNet(config).state_dict()
    path.unlink()
    model = MagNet(config, load_weights=False)
    model.load_state_dict(saved)
    loaded = model.classifier.backbone.encoder.state_dict()
    assert torch.equal(loaded["trunk.0.weight"], state["trunk.0.weight"])
