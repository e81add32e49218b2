"""The named MagNet variants, as the config values in which each differs from the paper's defaults.

- ``magnet3``: the paper's 3-layer MagNet, P = [2, 3, 3] (18 final patches, paper Figure 4), InceptionV3
  classifier, ResNet-18 auxiliary classifiers on layers 1 and 3 (paper §3.2-§3.4): exactly the defaults of
  ``MagNetConfig``.
- ``magnet4``: the paper's 4-layer MagNet, P = [2, 3, 2, 3] (36 final patches) [choice: the paper says only
  "a combination of [2, 3]"; docs/method.md §2.9], auxiliary classifiers on layers 1 and 3.
- ``tiny``: a CPU variant for demos and tests: P = [2, 2, 2], the small CNN for the classifier (112 px
  final patches) and the auxiliary classifiers, GRU hidden 128.

A preset is a plain mapping of config keys, so a recipe can name its variant and give only the keys in
which it differs (``model: {variant: tiny, sampler: bilinear}``); ``MagNetConfig.preset_defaults`` and
``magnet.models.registry.model_config`` read it. This module imports nothing of the model, so the config
can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, get_args

__all__ = ["PRESETS", "VARIANTS", "Variant"]

Variant = Literal["magnet3", "magnet4", "tiny"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)

PRESETS: Mapping[Variant, Mapping[str, Any]] = MappingProxyType(
    {
        "magnet3": MappingProxyType({}),
        "magnet4": MappingProxyType({"patches_per_layer": (2, 3, 2, 3), "aux_layers": (1, 3)}),
        "tiny": MappingProxyType(
            {
                "patches_per_layer": (2, 2, 2),
                # Final patches of 112 px from 224 px reads: the small CNN needs no more, and it keeps a
                # forward + backward of 4 slides well under a second on 2 CPU cores.
                "final_size": 112,
                "final_read_size": 224,
                "classifier_input_size": 112,
                "backbone": "small",
                "aux_backbone": "small",
                "gru_hidden": 128,
                "aux_layers": (1, 3),
            }
        ),
    }
)
