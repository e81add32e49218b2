"""Old checkpoints still load: every model's state_dict keys and shapes are pinned.

``data/state_dict_keys.json`` maps ``"<variant>:<key>=<value>,..."`` (``model_config`` overrides, values as
Python literals) to ``{name: shape}``, taken from models built before the zoom modes and levers became parts
(``magnet.models.zoom``, ``magnet.models.zoom_levers``). A change of keys or shapes would break loading the
checkpoints trained before it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from magnet.models import build_model

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "state_dict_keys.json").read_text())


def _value(text: str) -> object:
    """``True``, ``3.0``... as Python literals; anything else (``fixed``) is a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _overrides(levers: str) -> dict[str, object]:
    pairs = (item.split("=", 1) for item in levers.split(",") if item)
    return {key: _value(value) for key, value in pairs}


@pytest.fixture
def no_weight_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and shapes do not depend on the initial values: skip drawing them (InceptionV3 takes seconds)."""
    for name in ("trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "constant_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


def test_the_snapshot_covers_every_variant_and_zoom_mode() -> None:
    assert {entry.split(":")[0] for entry in SNAPSHOT} == {"tiny", "magnet3", "magnet4"}
    assert {"zoom=fixed", "zoom=random", "zoom=oracle", ""} <= {entry.split(":")[1] for entry in SNAPSHOT}


@pytest.mark.parametrize("entry", sorted(SNAPSHOT))
@pytest.mark.usefixtures("no_weight_init")
def test_state_dict_keys_and_shapes_are_unchanged(entry: str) -> None:
    variant, levers = entry.split(":", 1)
    state = build_model(variant, **_overrides(levers)).state_dict()
    shapes = {name: list(tensor.shape) for name, tensor in state.items()}
    assert shapes == SNAPSHOT[entry]
