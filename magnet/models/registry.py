"""The named MagNet variants (``magnet.models.variants``) as a plain dict of config builders, and
``build_model``.

``model_config("tiny", sampler="bilinear")`` is the ``tiny`` preset with that key changed: the same config
that a recipe's ``model: {variant: tiny, sampler: bilinear}`` resolves to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from magnet.errors import ConfigError
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig
from magnet.models.variants import PRESETS, VARIANTS, Variant

__all__ = ["MODELS", "build_model", "model_config"]


def _check_keys(overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(MagNetConfig.field_names()))
    if unknown:
        raise ConfigError(
            f"unknown model option(s) {', '.join(unknown)}; known: {', '.join(MagNetConfig.field_names())}"
        )


def _variant_config(name: Variant, **overrides: Any) -> MagNetConfig:
    """The preset ``name`` with ``overrides`` (config keys) given on top of it."""
    _check_keys(overrides)
    if overrides.get("variant", name) != name:
        raise ConfigError(f"variant={overrides['variant']!r} given to the {name!r} builder: name one variant")
    return MagNetConfig(**{**PRESETS[name], **overrides, "variant": name})


MODELS: dict[str, Callable[..., MagNetConfig]] = {name: partial(_variant_config, name) for name in VARIANTS}


def model_config(name_or_config: str | MagNetConfig, **overrides: Any) -> MagNetConfig:
    """The config of a named variant (or a given config) with ``overrides`` applied."""
    if isinstance(name_or_config, MagNetConfig):
        _check_keys(overrides)
        return dataclasses.replace(name_or_config, **overrides)
    if name_or_config not in MODELS:
        raise ConfigError(f"unknown model {name_or_config!r}; known: {', '.join(MODELS)}")
    return MODELS[name_or_config](**overrides)


def build_model(name_or_config: str | MagNetConfig, **overrides: Any) -> MagNet:
    """A MagNet from a variant name or a config, with ``overrides`` (config keys) applied."""
    return MagNet(model_config(name_or_config, **overrides))
