"""Named MagNet variants as a plain dict of config builders, and ``build_model``.

- ``magnet3``: the paper's 3-layer MagNet, P = [2, 3, 3] (18 final patches, paper Figure 4), InceptionV3
  classifier, ResNet-18 auxiliary classifiers on layers 1 and 3 (paper §3.2-3.4).
- ``magnet4``: the paper's 4-layer MagNet, P = [2, 3, 2, 3] (36 final patches) [choice: the paper says only
  "a combination of [2, 3]"; METHOD.md §2.9], auxiliary classifiers on layers 1 and 3.
- ``tiny``: a CPU variant for demos and tests: P = [2, 2, 2], the small CNN for the classifier (112 px
  final patches) and the auxiliary classifiers, GRU hidden 128.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from magnet.errors import ConfigError
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig

__all__ = ["MODELS", "build_model", "model_config"]


def _magnet3(**overrides: Any) -> MagNetConfig:
    return _with_overrides(MagNetConfig(), overrides)


def _magnet4(**overrides: Any) -> MagNetConfig:
    return _with_overrides(MagNetConfig(patches_per_layer=(2, 3, 2, 3), aux_layers=(1, 3)), overrides)


def _tiny(**overrides: Any) -> MagNetConfig:
    base = MagNetConfig(
        patches_per_layer=(2, 2, 2),
        # Final patches of 112 px from 224 px reads: the small CNN needs no more, and it keeps a
        # forward + backward of 4 slides well under a second on 2 CPU cores.
        final_size=112,
        final_read_size=224,
        classifier_input_size=112,
        backbone="small",
        aux_backbone="small",
        gru_hidden=128,
        aux_layers=(1, 3),
    )
    return _with_overrides(base, overrides)


MODELS: dict[str, Callable[..., MagNetConfig]] = {
    "magnet3": _magnet3,
    "magnet4": _magnet4,
    "tiny": _tiny,
}


def _with_overrides(config: MagNetConfig, overrides: dict[str, Any]) -> MagNetConfig:
    unknown = sorted(set(overrides) - set(MagNetConfig.field_names()))
    if unknown:
        raise ConfigError(
            f"unknown model option(s) {', '.join(unknown)}; known: {', '.join(MagNetConfig.field_names())}"
        )
    return dataclasses.replace(config, **overrides)


def model_config(name_or_config: str | MagNetConfig, **overrides: Any) -> MagNetConfig:
    """The config of a named variant (or a given config) with ``overrides`` applied."""
    if isinstance(name_or_config, MagNetConfig):
        return _with_overrides(name_or_config, overrides)
    if name_or_config not in MODELS:
        raise ConfigError(f"unknown model {name_or_config!r}; known: {', '.join(MODELS)}")
    return MODELS[name_or_config](**overrides)


def build_model(name_or_config: str | MagNetConfig, **overrides: Any) -> MagNet:
    """A MagNet from a variant name or a config, with ``overrides`` (config keys) applied."""
    return MagNet(model_config(name_or_config, **overrides))
