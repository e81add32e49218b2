"""Tests for magnet.config_io: YAML recipes into dataclasses, strict keys and types, overrides, round
trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from magnet.config_io import (
    apply_override,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
    save_config,
)
from magnet.errors import ConfigError


@dataclass
class ModelCfg:
    patches_per_layer: tuple[int, ...] = (3, 3, 2)
    variant: Literal["magnet3", "magnet4", "tiny"] = "magnet3"
    dropout: float = 0.0
    frozen_patch: bool = True


@dataclass
class TrainCfg:
    lr: float = 3e-5
    epochs: int = 200
    out: Path | None = None
    view: tuple[int, int] = (56, 56)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")


@dataclass(frozen=True)
class RunCfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    seed: int = 0
    note: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_when_no_file() -> None:
    assert load_config(RunCfg, None) == RunCfg()


def test_nested_yaml_is_read_and_coerced(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model:\n  patches_per_layer: [4, 4]\n  variant: tiny\ntrain:\n  lr: 3e-4\n  epochs: 1e1\n"
        "  out: runs/a\n  view: [28, 28]\nseed: 7\nextra: {w: 1}\n",
    )
    cfg = load_config(RunCfg, path)
    assert cfg.model.patches_per_layer == (4, 4)
    assert cfg.model.variant == "tiny"
    # PyYAML reads 3e-4 as a string; float fields take it. 1e1 is an integral number for an int field.
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 10 and isinstance(cfg.train.epochs, int)
    assert cfg.train.out == Path("runs/a")
    assert cfg.train.view == (28, 28)
    assert cfg.extra == {"w": 1.0}
    assert cfg.model.dropout == 0.0  # untouched keys keep their defaults


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  patchs_per_layer: [3, 3]\n")
    with pytest.raises(ConfigError) as info:
        load_config(RunCfg, path)
    message = str(info.value)
    assert message == f"{path}: unknown key 'model.patchs_per_layer' (did you mean 'patches_per_layer'?)"


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' \(valid keys here: model, train, seed"):
        load_config(RunCfg, write(tmp_path, "zzz: 1\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: abc\n", "'seed' must be an integer (got 'abc')"),
        ("seed: 1.5\n", "'seed' must be an integer"),
        ("seed: true\n", "'seed' must be an integer"),
        ("train:\n  lr: fast\n", "'train.lr' must be a number"),
        ("model:\n  frozen_patch: 1\n", "'model.frozen_patch' must be true or false"),
        ("model:\n  variant: magnet5\n", "'model.variant' must be one of 'magnet3', 'magnet4', 'tiny'"),
        ("model:\n  patches_per_layer: [3, x]\n", "'model.patches_per_layer' must be a list"),
        ("model:\n  patches_per_layer: 3\n", "'model.patches_per_layer' must be a list"),
        ("train:\n  view: [1, 2, 3]\n", "'train.view' must be a list of 2 items"),
        ("note: 12\n", "'note' must be a string (quote it in YAML)"),
        ("model: 3\n", "'model' must be a section"),
        ("train:\n  tags: [a, 1]\n", "'train.tags' must be a list"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(RunCfg, path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_optional_accepts_null(tmp_path: Path) -> None:
    cfg = load_config(RunCfg, write(tmp_path, "note: null\ntrain:\n  out: null\n"))
    assert cfg.note is None and cfg.train.out is None


def test_post_init_value_error_becomes_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"demo.yaml: section 'train': epochs must be at least 1"):
        load_config(RunCfg, path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "expected a mapping of keys to values at the top, got list"),
        ("model: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(RunCfg, path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(RunCfg, tmp_path / "nope.yaml")
    assert load_config(RunCfg, write(tmp_path, "")) == RunCfg()


def test_overrides_apply_after_file(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 3\ntrain:\n  lr: 0.1\n")
    cfg = load_config(
        RunCfg,
        path,
        ["train.lr=1e-4", "model.patches_per_layer=[2,2]", "note=hello", "train.out=null", "seed=5"],
    )
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.patches_per_layer == (2, 2)
    assert cfg.note == "hello"
    assert cfg.train.out is None
    assert cfg.seed == 5


def test_override_section_mapping_merges() -> None:
    cfg = apply_override(RunCfg(), "model={variant: tiny}")
    assert cfg.model.variant == "tiny" and cfg.model.patches_per_layer == (3, 3, 2)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("model.patchs=3", "--set model.patchs=3: unknown key 'model.patchs' (did you mean"),
        ("seed=abc", "--set seed=abc: 'seed' must be an integer"),
        ("seed", "--set seed: expected key=value"),
        ("seed.x=1", "--set seed.x=1: 'seed' is a value, not a section"),
        ("nothere.x=1", "--set nothere.x=1: unknown key 'nothere'"),
        ("seed=[1", "--set seed=[1: value is not valid YAML"),
    ],
)
def test_bad_overrides(item: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RunCfg, None, [item])
    assert str(info.value).startswith(expected)


def test_dict_round_trip_and_from_dict_validation() -> None:
    cfg = RunCfg(model=ModelCfg(variant="tiny"), train=TrainCfg(out=Path("x/y"), tags=["a"]), note="n")
    plain = config_to_dict(cfg)
    assert plain["train"]["out"] == "x/y" and plain["model"]["patches_per_layer"] == [3, 3, 2]
    assert config_from_dict(RunCfg, plain) == cfg
    with pytest.raises(ConfigError, match=r"checkpoint: unknown key 'model.heads'"):
        config_from_dict(RunCfg, {"model": {"heads": 2}}, source="checkpoint")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(RunCfg, None, ["train.lr=0.001", "model.variant=magnet4", "extra={a: 2.5}"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(RunCfg, path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left behind
    assert "variant: magnet4" in config_to_yaml(cfg)


def test_missing_required_key() -> None:
    @dataclass
    class Needs:
        name: str

    with pytest.raises(ConfigError, match="missing required key 'name'"):
        config_from_dict(Needs, {})
    assert config_from_dict(Needs, {"name": "x"}) == Needs("x")


def test_not_a_dataclass_is_a_bug() -> None:
    with pytest.raises(TypeError):
        load_config(dict, None)  # type: ignore[type-var]


def test_overrides_checked_together_pass_as_a_set() -> None:
    from magnet.training.recipe import TrainConfig

    # Each alone breaks model.min_scale <= random_zoom_min_scale <= max_scale; together they are valid.
    items = ["model.max_scale=0.5", "model.min_scale=0.5", "model.random_zoom_min_scale=0.5"]
    cfg = load_config(TrainConfig, None, items)
    assert (cfg.model.min_scale, cfg.model.max_scale, cfg.model.random_zoom_min_scale) == (0.5, 0.5, 0.5)
    # An invalid set still fails, one line.
    with pytest.raises(ConfigError, match=r"random_zoom_min_scale=0.25: must lie in \[min_scale=0.5"):
        load_config(TrainConfig, None, ["model.min_scale=0.5"])
