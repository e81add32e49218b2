"""MagNetConfig: the paper's defaults, validation with one-line errors, round trips."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from magnet.config_io import config_from_dict, config_to_dict, load_config
from magnet.errors import ConfigError
from magnet.layers.samplers import SAMPLER_KINDS
from magnet.layers.theta import SPREADS
from magnet.models import MagNetConfig, model_config
from magnet.models.model_config import AUX_BACKBONES, BACKBONES, READOUTS, SIBLING_LAYOUTS, ZOOMS
from magnet.models.variants import PRESETS, VARIANTS


def test_defaults_are_the_papers_magnet3() -> None:
    config = MagNetConfig()
    assert config.patches_per_layer == (2, 3, 3) and config.num_layers == 3
    assert (config.view_size, config.read_size, config.final_size, config.final_read_size) == (
        56,
        112,
        224,
        448,
    )
    assert (
        config.min_scale == 0.05 and config.backbone == "inception_v3" and config.aux_backbone == "resnet18"
    )
    assert config.aux_layers == (1, 3) and config.frozen_patch and not config.pretrained
    assert [config.patches_at(layer) for layer in range(4)] == [1, 2, 6, 18]
    assert config.classifier_size == 224
    assert config.has_frozen_patch(2) and not config.has_frozen_patch(1)


@pytest.mark.parametrize("name", ["magnet3", "magnet4", "tiny"])
def test_round_trips_through_asdict_and_yaml(name: str) -> None:
    config = model_config(name)
    assert MagNetConfig(**dataclasses.asdict(config)) == config
    as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    assert MagNetConfig(**yaml.safe_load(yaml.safe_dump(as_lists))) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aux_layers": (1, 4)}, "layer 4 is not in 1..3"),
        ({"aux_layers": (3, 1)}, "increasing order"),
        ({"learned_layers": (1, 4)}, "learned_layers=\\[1, 4\\]: layer 4 is not in 1..3"),
        ({"learned_layers": (2, 2)}, "learned_layers=\\[2, 2\\]: repeated layer"),
        ({"learned_layers": (1,), "zoom": "random"}, "only the learned zoom has layers that learn"),
        ({"patches_per_layer": ()}, "with at least one item"),
        ({"patches_per_layer": (2, 0)}, "every item >= 1"),
        ({"patches_per_layer": (2, 1), "aux_layers": ()}, "frozen_patch=True needs"),
        ({"patches_per_layer": "233"}, "list of integers"),
        ({"read_size": 32}, "read_size=32 < view_size=56"),
        ({"final_read_size": 100}, "final_read_size=100"),
        ({"view_size": 0}, "view_size=0"),
        ({"min_scale": 0.0}, "min_scale"),
        ({"sibling_offset": 1.0}, "sibling_offset"),
        ({"spread": "l1"}, "spread='l1'"),
        ({"sampler": "nearest"}, "sampler='nearest'"),
        ({"backbone": "vgg"}, "backbone='vgg'"),
        ({"aux_backbone": "inception_v3"}, "aux_backbone"),
        ({"classifier_input_size": 64}, "inception_v3 needs classifier input >= 75"),
    ],
)
def test_invalid_values_raise_one_line_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        MagNetConfig(**overrides)
    assert "\n" not in str(info.value)


def test_single_layer_and_no_frozen_patch_are_valid() -> None:
    assert MagNetConfig(patches_per_layer=(4,), aux_layers=(1,)).num_layers == 1
    assert MagNetConfig(patches_per_layer=(2, 1), aux_layers=(), frozen_patch=False).patches_at(2) == 2


CHOICES = {
    "spread": SPREADS,
    "sampler": SAMPLER_KINDS,
    "sibling_layout": SIBLING_LAYOUTS,
    "zoom": ZOOMS,
    "readout": READOUTS,
    "backbone": BACKBONES,
    "aux_backbone": AUX_BACKBONES,
    "variant": VARIANTS,
}


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_choice_fields_are_literals_whose_values_are_the_allowed_tuples(name: str) -> None:
    hint = typing.get_type_hints(MagNetConfig)[name]
    assert typing.get_origin(hint) is typing.Literal
    assert typing.get_args(hint) == CHOICES[name]
    with pytest.raises(ConfigError, match=f"{name}='nope': must be one of") as info:
        MagNetConfig(**{name: "nope"})
    assert "\n" not in str(info.value)


def test_a_variant_supplies_the_keys_a_mapping_leaves_out(tmp_path: Path) -> None:
    tiny = model_config("tiny", sampler="bilinear")
    assert tiny.variant == "tiny" and tiny == MagNetConfig(**{**PRESETS["tiny"], "sampler": "bilinear"})
    assert config_from_dict(MagNetConfig, {"variant": "tiny", "sampler": "bilinear"}) == tiny
    # A saved config (every key) rebuilds itself; one saved before `variant` existed reads as magnet3 + keys.
    saved = config_to_dict(tiny)
    assert config_from_dict(MagNetConfig, saved) == tiny
    assert config_from_dict(MagNetConfig, {k: v for k, v in saved.items() if k != "variant"}) == tiny
    # --set variant swaps the preset under the recipe's own keys.
    recipe = tmp_path / "model.yaml"
    recipe.write_text("variant: tiny\nsampler: bilinear\n")
    swapped = load_config(MagNetConfig, recipe, ["variant=magnet4"])
    assert swapped == model_config("magnet4", sampler="bilinear") and swapped.variant == "magnet4"
    with pytest.raises(ConfigError, match="'variant' must be one of"):
        load_config(MagNetConfig, recipe, ["variant=huge"])
    with pytest.raises(ConfigError, match="name one variant"):
        model_config("tiny", variant="magnet3")
